"""The command line: defaults < --config YAML < flags, every field of the config a flag (tyro), and user errors
as one line on stderr with exit code 2.

    --section.field VALUE         any field (--help lists them with their docs); lists take several values
    --section.field / --section.no_field                booleans
    --task.options.KEY VALUE      one option of the task distribution (merged into the YAML's options)
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import io
import os
import re
import sys
import typing
from pathlib import Path
from typing import Any, Callable

from metarl.core.errors import ConfigError, MetaRLError
from metarl.run.config import Config, from_dict, merge_dicts, read_yaml, to_dict

EXIT_USER_ERROR = 2
OPTIONS = "--task.options"


def main_guard(fn: Callable[..., object]) -> Callable[..., object]:
    """Wrap a script's main(): MetaRLError -> `error: message`, exit 2 (a Ctrl-C during training: its message,
    exit 130). Set METARL_TRACEBACK=1 to see the full traceback instead."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MetaRLError as e:
            if os.environ.get("METARL_TRACEBACK"):
                raise
            if not getattr(e, "quiet", False):
                print(f"error: {e}", file=sys.stderr)
            sys.exit(getattr(e, "exit_code", EXIT_USER_ERROR))
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper


def option_value(text: str) -> Any:
    """A task option's value: true/false, an int, a float (1e-3 too), else the string itself."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def pop_flag(args: list[str], flag: str) -> str | None:
    """Remove `flag VALUE` or `flag=VALUE` from args; the value, or None."""
    for i, a in enumerate(args):
        if a == flag:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise ConfigError(f"{flag} needs a value")
            value = args[i + 1]
            del args[i : i + 2]
            return value
        if a.startswith(flag + "="):
            return args.pop(i).split("=", 1)[1]
    return None


def _pop_task_options(args: list[str]) -> tuple[dict[str, Any], list[str]]:
    """--task.options.KEY VALUE flags (and --task.options KEY VALUE ...) out of args, as a dict."""
    options, rest, i = {}, [], 0
    while i < len(args):
        token = args[i]
        name, eq, inline = token.partition("=")
        if name.startswith(OPTIONS + "."):
            value = inline if eq else (args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else None)
            if value is None:
                raise ConfigError(f"{name} takes one value")
            options[name[len(OPTIONS) + 1:]] = option_value(value)
            i += 1 if eq else 2
        elif name == OPTIONS:
            j = i + 1
            while j + 1 < len(args) and not args[j].startswith("--"):
                options[args[j]] = option_value(args[j + 1])
                j += 2
            i = j
        else:
            rest.append(token)
            i += 1
    return options, rest


@functools.lru_cache(maxsize=None)
def flag_names(cls: type = Config, prefix: str = "") -> tuple[str, ...]:
    """Every --section.field flag of a nested dataclass (booleans with their --section.no_field)."""
    hints, out = typing.get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += flag_names(tp, f"{prefix}{f.name}.")
        else:
            out += [f"--{prefix}{f.name}"] + ([f"--{prefix}no_{f.name}"] if tp is bool else [])
    return tuple(out)


def _field_type(flag: str) -> Any:
    """The annotation of the config field behind --section.field (None if there is none)."""
    tp: Any = Config
    for part in flag.lstrip("-").split("."):
        hints = typing.get_type_hints(tp) if dataclasses.is_dataclass(tp) else {}
        if part not in hints:
            return None
        tp = hints[part]
    return tp


_KIND = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
_KINDS = {int: "integers", float: "numbers", bool: "true / false values", str: "strings"}


def _one_line(report: str, args: list[str]) -> str:
    """tyro's error report (a title, then sections between rules of dashes) as one line, in the words of the
    config's own errors where the cause is a common one."""
    lines = [ln.strip().strip("│╭╮╰╯─").strip() for ln in report.splitlines()]
    sections, current = [], []
    for ln in lines:
        if ln and set(ln) <= set("-─━"):
            sections.append(current)
            current = []
        elif ln:
            current.append(ln)
    sections.append(current)
    body = next((s for s in sections[1:] if s), sections[0] if sections else [])
    text = " ".join(body).replace("Error parsing ", "")
    bad_value = re.match(r"(--[\w.]+): (?:invalid literal for int\(\) with base 10|could not convert string to "
                         r"float|Could not find valid parse for arguments): (.*)$", text)
    if bad_value:
        flag, got = bad_value.groups()
        tp = _field_type(flag)
        item = typing.get_args(tp)[0] if typing.get_origin(tp) in (tuple, list) else None
        what = f"a list of {_KINDS.get(item, 'values')}" if item else _KIND.get(tp, "a valid value")
        return f"{flag[2:]} must be {what}, got {got}"
    choice = re.match(r"invalid choice (.*) for argument '--([\w.]+)'\. Expected one of \((.*)\)\.?$", text)
    if choice:
        got, name, allowed = choice.groups()
        return f"{name} must be one of {allowed.replace(chr(39), '')}; got {got}"
    if text.startswith("Unrecognized options:"):
        unknown = [a for a in args if a.startswith("--") and a.split("=")[0] not in flag_names()]
        if not unknown:
            return f"unexpected argument(s) {text.split(':', 1)[1].strip()}: flags look like --section.field VALUE"
        flag = unknown[0].split("=")[0]
        close = difflib.get_close_matches(flag, flag_names(), n=1)
        return f"unknown flag {flag}" + (f"; did you mean {close[0]}?" if close else "")
    return text or "invalid command line"


def description_with_registries(description: str | None) -> str:
    from metarl.algorithms import ALGORITHMS
    from metarl.outer import OUTER_STEPS

    lines = [description.strip(), ""] if description else []
    lines.append("Precedence: defaults < --config YAML < flags. --task.options.KEY VALUE sets one option of the task "
                 "distribution.")
    lines.append("learner.algo: " + "; ".join(f"{a.name} ({a.summary})" for a in ALGORITHMS.values()) + ".")
    lines.append("outer.optimizer: " + "; ".join(f"{s.name} ({s.summary})" for s in OUTER_STEPS.values()) + ".")
    return "\n".join(lines)


def parse_config(args: list[str] | None = None, description: str | None = None,
                 base: dict[str, Any] | None = None, validate: bool = True) -> Config:
    """The config of a command line: `base` (e.g. a checkpoint's config) < --config YAML < flags; validated."""
    import tyro

    args = list(sys.argv[1:] if args is None else args)
    options, args = _pop_task_options(args)
    path = pop_flag(args, "--config")
    if base is None and path is None and "--resume" in args:  # continue a run with its own config
        run_dir = pop_flag(list(args), "--run_dir")
        if run_dir and (Path(run_dir) / "config.yaml").is_file():
            base = read_yaml(Path(run_dir) / "config.yaml")
    data = merge_dicts(base or {}, read_yaml(path) if path else {})
    default = from_dict(Config, data)
    if "-h" in args or "--help" in args:
        tyro.cli(Config, default=default, args=["--help"], use_underscores=True,
                 description=description_with_registries(description))
    report = io.StringIO()
    try:
        with contextlib.redirect_stderr(report), contextlib.redirect_stdout(report):
            cfg = tyro.cli(Config, default=default, args=args, use_underscores=True)
    except SystemExit as e:
        if e.code in (0, None):
            raise
        raise ConfigError(_one_line(report.getvalue(), args)) from None
    if options:  # through from_dict: the options' types are checked like the YAML's
        cfg = from_dict(Config, merge_dicts(to_dict(cfg), {"task": {"options": options}}))
    if path is not None:
        cfg.config = path
    return cfg.validate() if validate else cfg
