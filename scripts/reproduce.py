#!/usr/bin/env python
"""Reproduce a results table with one command: train what is missing in resumable, time-limited segments, then
regenerate the table (and its chart) from results/. Re-running it continues what is unfinished.

    python scripts/reproduce.py fewshot [--dry-run] [--segment-s 3600] [--only maml_5w1s ...]
    python scripts/reproduce.py maml-rl [--dry-run] [--segment-s 3600] [--only halfcheetah_dir ...]
    python scripts/reproduce.py fisher [--dry-run] [--max-segments 1]

maml-rl: the MAML paper's meta-RL figure, MAML-TRPO with the paper's settings on Navigation2D and, with the paper's
task definitions (task.options.terms maml_paper), HalfCheetahVel, HalfCheetahDir, AntVel, AntDir
(configs/maml_paper/): results/maml_paper/<env>/ gets the record, eval.json (return after 0..3 steps on held-out
tasks), the learning curve and metrics.jsonl; runs in progress live in checkpoints/maml_paper/<env>/.

fewshot: Omniglot 5-way 1-shot and 20-way 1-shot for MAML, FOMAML, Meta-SGD, iMAML, Reptile, ANIL, ProtoNets
and the LSTM meta-learner, 5-way 5-shot for MAML, Reptile and ProtoNets (configs/omniglot/). Per row:
results/omniglot/<row>/ gets the training record (record.py: the exact command, wall time over all segments),
eval.json (transductive batch norm, as trained), eval_support.json (each query normalised with its task's
support statistics), memory.json (peak resident memory of one meta-iteration, measured in a fresh process).
A run in progress lives in checkpoints/fewshot/<row>/ (committed between sessions; removed once recorded).

fisher: MAML-TRPO's outer step with a subsampled curvature (the KL's Hessian on 2 of every task's 20 episodes,
outer.hvp_episode_fraction 0.1, what the v5-terms MuJoCo configs use) beside the full one (all episodes, what
configs/maml_paper ships since this comparison), on HalfCheetahDir with the paper's
terms, same seed, 150 iterations: results/fisher/<row>/ (returns, the measured / modelled KL of every accepted step,
seconds per iteration in metrics.jsonl), drawn side by side in results/fisher/fisher.png.

--dry-run lists every row with its state (done, in progress at iteration k, to do, changed) and what would run
next; for a run in progress, the training time left at the pace of its last segment. A row whose config now
differs from the one its results (or its run in progress) were trained with is "changed": the settings that
differ are listed, and a real run trains it again from scratch (launch settings such as run_dir, the time
limit and logging do not count; more train.iterations resume the run instead).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from metarl.run.child import run_child  # noqa: E402


#: where rows keep their results and their runs in progress (--results, --runs)
PLACES = {"results": ROOT / "results", "runs": ROOT / "checkpoints"}


@dataclass(frozen=True)
class Row:
    name: str
    config: str
    table: str
    overrides: tuple[str, ...] = ()  # flags passed to train.py after the config

    @property
    def results(self) -> Path:
        return PLACES["results"] / self.table / self.name

    @property
    def run_dir(self) -> Path:
        return PLACES["runs"] / TABLES[self.table].folder / self.name

    @property
    def iterations(self) -> int:
        if "--train.iterations" in self.overrides:
            return int(self.overrides[self.overrides.index("--train.iterations") + 1])
        import yaml

        return int(yaml.safe_load((ROOT / self.config).read_text())["train"]["iterations"])


@dataclass(frozen=True)
class Table:
    folder: str  # checkpoints/<folder>/<row>/: runs in progress
    rows: list
    extra: tuple[str, ...] = ()  # result files a finished row has besides record.json and eval.json
    keep_run_dir: bool = False  # a finished row's run dir stays (its checkpoint: the trained meta-policy)


LEARNERS_1SHOT = ("maml", "fomaml", "metasgd", "imaml", "reptile", "anil", "protonet", "lstm")
FEWSHOT = [Row(f"{learner}_{ways}w1s", "configs/omniglot_5way1shot.yaml" if (learner, ways) == ("maml", 5)
               else f"configs/omniglot/{learner}_{ways}w1s.yaml", "omniglot")
           for ways in (5, 20) for learner in LEARNERS_1SHOT] + \
          [Row(f"{learner}_5w5s", f"configs/omniglot/{learner}_5w5s.yaml", "omniglot") for learner in ("maml", "reptile", "protonet")]
MAML_RL = [Row(env, f"configs/maml_paper/{env}.yaml", "maml_paper")
           for env in ("navigation2d", "halfcheetah_vel", "halfcheetah_dir", "ant_vel", "ant_dir")]
FISHER_ITERATIONS = ("--train.iterations", "150", "--train.eval_every", "50")
FISHER = [Row("episodes_2_of_20", "configs/maml_paper/halfcheetah_dir.yaml", "fisher",
              (*FISHER_ITERATIONS, "--outer.hvp_episode_fraction", "0.1")),
          Row("full", "configs/maml_paper/halfcheetah_dir.yaml", "fisher",
              (*FISHER_ITERATIONS, "--outer.hvp_episode_fraction", "1.0"))]
TABLES = {"omniglot": Table("fewshot", FEWSHOT, extra=("eval_support.json", "memory.json")),
          "maml_paper": Table("maml_paper", MAML_RL, keep_run_dir=True),
          "fisher": Table("fisher", FISHER, keep_run_dir=True)}
COMMANDS = {"fewshot": "omniglot", "maml-rl": "maml_paper", "fisher": "fisher"}


#: settings of a run's saved config that say how it was launched, not what it trains (train.iterations: a
#: longer row resumes, see progress)
LAUNCH_KEYS = ("config", "run_dir", "resume", "device", "train.time_limit_s", "train.iterations", "log.")


def _settings(data: dict) -> dict | None:
    """A config mapping resolved against today's defaults and flattened (None: not a config this code reads)."""
    from metarl.core.errors import ConfigError
    from metarl.run.config import Config, flatten_dict, from_dict, to_dict

    try:
        flat = flatten_dict(to_dict(from_dict(Config, data)))
    except (ConfigError, TypeError):
        return None
    return {k: v for k, v in flat.items() if not any(k == key or (key.endswith(".") and k.startswith(key))
                                                     for key in LAUNCH_KEYS)}


def config_changes(row: Row, saved: Path) -> list[str]:
    """Where the row's config (its file and overrides, as it reads today) differs from `saved` (the config a
    run or result was trained with): ['task.options.train_ways: unset -> 60', ...]; [] when they agree or
    either cannot be read."""
    from metarl.run.cli import option_value
    from metarl.run.config import merge_dicts, nest_dict, read_yaml

    if not saved.is_file():
        return []
    overrides = {flag.removeprefix("--"): option_value(value)
                 for flag, value in zip(row.overrides[::2], row.overrides[1::2])}
    now = _settings(merge_dicts(read_yaml(ROOT / row.config), nest_dict(overrides)))
    then = _settings(read_yaml(saved))
    if now is None or then is None:
        return []
    return [f"{k}: {then.get(k, 'unset')} -> {now.get(k, 'unset')}" for k in sorted(set(now) | set(then))
            if now.get(k, "unset") != then.get(k, "unset")]


def state(row: Row) -> tuple[str, int]:
    """("done" | "in progress" | "to do" | "changed", iterations reached)."""
    status, iteration, _, _ = progress(row)
    return status, iteration


def progress(row: Row) -> tuple[str, int, float, list[str]]:
    """state(), the training seconds the run in progress has spent so far (0 otherwise) and, when "changed"
    (the row's config no longer says what its results or its run in progress were trained with), how
    (config_changes)."""
    files = [row.results / f for f in ("record.json", "eval.json", *TABLES[row.table].extra)]
    if all(f.is_file() for f in files):
        done = json.loads((row.results / "eval.json").read_text()).get("iteration", 0)
        changes = config_changes(row, row.results / "config.yaml")
        if changes:
            return "changed", done, 0.0, changes
        if done >= row.iterations:
            return "done", done, 0.0, []
    checkpoint = row.run_dir / "checkpoint.pt"
    if checkpoint.is_file():
        from metarl.run.checkpoint import load_checkpoint

        saved = load_checkpoint(checkpoint)
        changes = config_changes(row, row.run_dir / "config.yaml")
        status = "changed" if changes else "in progress"
        return status, int(saved["iteration"]), float(saved.get("elapsed_s", 0.0)), changes
    return "to do", 0, 0.0, []


def last_pace(run_dir: Path) -> float | None:
    """Seconds per iteration of the run's last segment (its last logged time/iter_per_s), or None."""
    from metarl.run.plots import read_metrics  # skips a line a crash cut short

    metrics = run_dir / "metrics.jsonl"
    rates = read_metrics(metrics).get("time/iter_per_s", {}) if metrics.is_file() else {}
    rate = rates[max(rates)] if rates else 0.0
    return 1 / rate if rate > 0 else None


def time_left(row: Row, iteration: int, elapsed_s: float) -> str:
    """' (about 1.7 h of training left at 13.6 s per iteration)': the pace of the run's last segment, else its
    mean so far (both as measured: shared cores included)."""
    pace = last_pace(row.run_dir) or (elapsed_s / iteration if iteration > 0 and elapsed_s > 0 else None)
    if pace is None:
        return ""
    left = (row.iterations - iteration) * pace
    amount = f"{left / 3600:.1f} h" if left >= 5400 else f"{left / 60:.0f} min"
    return f" (about {amount} of training left at {pace:.2f} s per iteration)"


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    try:
        proc = run_child(cmd, cwd=ROOT)
    except KeyboardInterrupt:  # the segment stopped with its checkpoint written
        proc = None
    if proc is None or proc.stop_requested or proc.returncode == 130:  # 130: record.py alone was stopped
        print("interrupted: run the same command again to continue", file=sys.stderr)
        sys.exit(130)
    if proc.returncode:
        raise SystemExit(f"error: {cmd[1]} exited with {proc.returncode}")


def train_segment(row: Row, segment_s: float) -> int:
    """One time-limited segment of the row's training (recorded); the iteration its checkpoint reached."""
    py = sys.executable
    resume = (row.run_dir / "checkpoint.pt").is_file()
    run([py, "scripts/record.py", "--name", f"{row.table}/{row.name}", "--run_dir", str(row.run_dir),
         "--results", str(PLACES["results"]), "--note", "scripts/reproduce.py: time-limited segments, then --resume",
         "--", py, "scripts/train.py", "--config", row.config, *row.overrides, "--run_dir", str(row.run_dir),
         "--train.time_limit_s", str(segment_s), "--log.no_progress", "--log.wandb", "disabled",
         *(["--resume"] if resume else [])])
    from metarl.run.checkpoint import load_checkpoint

    return int(load_checkpoint(row.run_dir / "checkpoint.pt")["iteration"])


def finish(row: Row) -> None:
    """What a finished row keeps besides its training record: the few-shot table's support-statistics
    evaluation and the memory of one meta-iteration (then the run dir goes); the meta-RL table's metrics."""
    if TABLES[row.table].keep_run_dir:
        shutil.copy(row.run_dir / "metrics.jsonl", row.results / "metrics.jsonl")
        return
    py = sys.executable
    run([py, "scripts/evaluate.py", "--checkpoint", str(row.run_dir), "--model.batch_norm", "support",
         "--log.no_progress", "--out", str(row.results / "eval_support.json")])
    mem = subprocess.run([py, __file__, "--memory-child", row.config], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    if mem.returncode:
        raise SystemExit(f"error: measuring {row.name}'s memory failed: {mem.stderr.strip().splitlines()[-1:]}")
    (row.results / "memory.json").write_text(mem.stdout.strip().splitlines()[-1] + "\n")
    shutil.rmtree(row.run_dir)


def memory_child(config: str) -> None:
    """Peak resident memory (MB above what the process held) of one meta-iteration of `config`, after a
    warm-up one: the allocator's and the kernels' first-call costs are not the iteration's."""
    from metarl.run.cli import parse_config
    from metarl.run.trainer import Trainer

    def status_mb(field: str) -> float:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024

    with tempfile.TemporaryDirectory() as tmp:
        cfg = parse_config(["--config", config, "--run_dir", tmp, "--log.wandb", "disabled", "--device", "cpu"])
        cfg.train.keep_freed_memory = False  # blocks unmapped when freed (the parent's MALLOC_MMAP_THRESHOLD_)
        trainer = Trainer(cfg)
        trainer.step()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # peak resident set := current (Linux >= 4.0)
        base = status_mb("VmRSS")
        trainer.step()
        print(json.dumps({"peak_mb": round(status_mb("VmHWM") - base, 1), "config": config,
                          "task_batching": trainer.learner.executor.mode}))


def main() -> None:
    if sys.argv[1:2] == ["--memory-child"]:
        memory_child(sys.argv[2])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", choices=sorted(COMMANDS))
    p.add_argument("--dry-run", action="store_true", help="list the rows, their state and what would run")
    p.add_argument("--segment-s", type=float, default=3600, help="training seconds per segment (then --resume)")
    p.add_argument("--only", nargs="*", default=None, help="these rows only")
    p.add_argument("--max-segments", type=int, default=0, help="stop after this many segments (0: until done)")
    p.add_argument("--results", type=Path, default=PLACES["results"], help="where results/<table>/<row>/ go")
    p.add_argument("--runs", type=Path, default=PLACES["runs"], help="where runs in progress live")
    a = p.parse_args()
    PLACES.update(results=a.results.resolve(), runs=a.runs.resolve())
    table = TABLES[COMMANDS[a.table]]
    rows = [r for r in table.rows if a.only is None or r.name in a.only]
    unknown = set(a.only or ()) - {r.name for r in table.rows}
    if unknown:
        raise SystemExit(f"error: no row {sorted(unknown)[0]!r} in {a.table}; rows: {', '.join(r.name for r in table.rows)}")
    segments = 0
    for row in rows:
        status, iteration, elapsed, changes = progress(row)
        line = f"{row.name:<16} {status:<12} {iteration:>6} / {row.iterations:<6} {row.config}"
        if changes:
            line += f"   (config changed since trained: {'; '.join(changes)})"
        if a.dry_run:
            print(line + ("" if status == "done" else "   -> would " + {"in progress": "resume", "to do": "start",
                                                                        "changed": "train it again from scratch"}[status]
                          + (time_left(row, iteration, elapsed) if status == "in progress" else "")))
            continue
        print(line, flush=True)
        if status == "done":
            continue
        if status == "changed":  # the old figures and run describe another config (git keeps them)
            shutil.rmtree(row.results, ignore_errors=True)
            shutil.rmtree(row.run_dir, ignore_errors=True)
            iteration = 0
        while iteration < row.iterations:
            if a.max_segments and segments == a.max_segments:
                print(f"stopped after {segments} segment(s): run the same command again to continue")
                return
            segments += 1
            iteration = train_segment(row, a.segment_s)
        finish(row)
    if not a.dry_run and PLACES["results"] == ROOT / "results":
        run([sys.executable, "scripts/results_table.py"])


if __name__ == "__main__":
    main()
