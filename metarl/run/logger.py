"""Loggers: one interface, three backends (console, JSONL file, Weights & Biases).

W&B never stops training: every call into it is guarded, and after the first failure the backend
warns once and turns itself off. Mode "online" falls back to "offline" when no API key is configured.
"""
from __future__ import annotations

import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Iterable

import torch


def _plain(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class Logger:
    """Interface. Backends override what they support; every method is a no-op by default."""

    def log(self, metrics: dict[str, Any], step: int) -> None: ...

    def log_image(self, name: str, path: str | os.PathLike, step: int | None = None) -> None: ...

    def log_artifact(self, path: str | os.PathLike, name: str, type: str) -> None: ...

    def log_summary(self, summary: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class ConsoleLogger(Logger):
    def __init__(self, write=None):
        self._write = write or (lambda s: print(s, file=sys.stderr))

    def log(self, metrics: dict[str, Any], step: int) -> None:
        parts = []
        for k, v in metrics.items():
            v = _plain(v)
            parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
        self._write(f"[{step}] " + " ".join(parts))


class JsonlLogger(Logger):
    """One JSON object per line: {"step": ..., metric: value, ...}; appends, so a resumed run continues it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", buffering=1)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self._f.write(json.dumps({"step": step, **{k: _plain(v) for k, v in metrics.items()}}) + "\n")

    def log_summary(self, summary: dict[str, Any]) -> None:
        self._f.write(json.dumps({"summary": {k: _plain(v) for k, v in summary.items()}}) + "\n")

    def close(self) -> None:
        self._f.close()


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


class WandbLogger(Logger):
    """W&B, never in the way: online without an API key logs offline; online with a key but no answer within
    `timeout_s` (no network) falls back to offline instead of blocking; any later failure turns it off."""

    def __init__(self, mode: str, project: str, entity: str | None, name: str, run_dir: Path,
                 config: dict[str, Any], resume_id: str | None = None, timeout_s: float = 20.0):
        if mode == "online" and not wandb_has_credentials():
            warnings.warn("wandb: no API key configured, logging offline (sync later with `wandb sync`)")
            mode = "offline"
        self.mode = mode
        self.run = None
        self.run_id = None
        if mode == "disabled":
            return
        try:
            import wandb

            self._wandb = wandb

            def init(m: str):
                return wandb.init(mode=m, project=project, entity=entity, name=name, dir=str(run_dir), config=config,
                                  id=resume_id, resume="allow" if resume_id else None,
                                  settings=wandb.Settings(silent=True, init_timeout=timeout_s))

            try:
                self.run = init(mode)
            except Exception as e:  # noqa: BLE001 - no network, a timeout, a refused key
                if mode != "online":
                    raise
                warnings.warn(f"wandb online did not start ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                              "logging offline (sync later with `wandb sync`)")
                self.mode = "offline"
                self.run = init("offline")
            self.run_id = self.run.id
        except Exception as e:  # noqa: BLE001 - a tracking failure must never stop training
            self._fail(e)

    def _fail(self, e: Exception) -> None:
        warnings.warn(f"wandb failed ({type(e).__name__}: {e}); continuing without it")
        self.run = None

    def _guard(self, fn, *args, **kwargs) -> None:
        if self.run is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            self._fail(e)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self._guard(lambda: self.run.log({k: _plain(v) for k, v in metrics.items()}, step=step))

    def log_image(self, name: str, path: str | os.PathLike, step: int | None = None) -> None:
        self._guard(lambda: self.run.log({name: self._wandb.Image(str(path))}, step=step))

    def log_artifact(self, path: str | os.PathLike, name: str, type: str) -> None:
        def do():
            art = self._wandb.Artifact(name, type=type)
            art.add_file(str(path))
            self.run.log_artifact(art)

        self._guard(do)

    def log_summary(self, summary: dict[str, Any]) -> None:
        self._guard(lambda: self.run.summary.update({k: _plain(v) for k, v in summary.items()}))

    def close(self) -> None:
        self._guard(lambda: self.run.finish())
        self.run = None


class MultiLogger(Logger):
    def __init__(self, loggers: Iterable[Logger]):
        self.loggers = list(loggers)

    def log(self, metrics, step):
        for lg in self.loggers:
            lg.log(metrics, step)

    def log_image(self, name, path, step=None):
        for lg in self.loggers:
            lg.log_image(name, path, step)

    def log_artifact(self, path, name, type):
        for lg in self.loggers:
            lg.log_artifact(path, name, type)

    def log_summary(self, summary):
        for lg in self.loggers:
            lg.log_summary(summary)

    def close(self):
        for lg in self.loggers:
            lg.close()

    @property
    def wandb_run_id(self) -> str | None:
        return next((lg.run_id for lg in self.loggers if isinstance(lg, WandbLogger)), None)


def make_logger(log_cfg, run_dir: str | os.PathLike, config: dict[str, Any], name: str,
                console_write=None, resume_id: str | None = None) -> MultiLogger:
    """The backends `log_cfg` (a metarl.run.config.LogConfig) asks for."""
    run_dir = Path(run_dir)
    loggers: list[Logger] = []
    if log_cfg.console:
        loggers.append(ConsoleLogger(console_write))
    if log_cfg.jsonl:
        loggers.append(JsonlLogger(run_dir / "metrics.jsonl"))
    # WANDB_MODE=disabled in the environment wins over a config's offline / online (W&B's own convention)
    if log_cfg.wandb != "disabled" and os.environ.get("WANDB_MODE", "").lower() != "disabled":
        loggers.append(WandbLogger(log_cfg.wandb, log_cfg.project, log_cfg.entity, name, run_dir, config, resume_id,
                                   getattr(log_cfg, "wandb_timeout_s", 20.0)))
    return MultiLogger(loggers)
