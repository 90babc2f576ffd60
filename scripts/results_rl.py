"""The meta-RL parts of the README's results (scripts/results_table.py): the MAML paper's table on the paper's task
definitions (results/maml_paper/, `scripts/reproduce.py maml-rl`) and the Fisher side-by-side (results/fisher/,
`scripts/reproduce.py fisher`), each a table and a chart drawn from the rows' record.json, eval.json and
metrics.jsonl."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: (row, env, published (return before, after 1 step, ...) or None, its source): the paper's table
MAML_PAPER = [
    ("navigation2d", "Navigation2D", (-40.4, -11.7, -3.3, -3.2), "MAML paper, 2D navigation, 0..3 steps, as issue #26 cites it"),
    ("halfcheetah_vel", "HalfCheetahVel", None, "MAML paper Fig. 5 (curves only)"),
    ("halfcheetah_dir", "HalfCheetahDir", (-51.0, 293.0), "a pytorch-maml-rl reproduction"),
    ("ant_vel", "AntVel", None, "MAML paper Fig. 5 (curves only)"),
    ("ant_dir", "AntDir", None, "MAML paper Fig. 5 (curves only)"),
]


def read_metrics(path: Path) -> dict[str, dict[int, float]]:
    import sys

    sys.path.insert(0, str(ROOT))
    from metarl.run.plots import read_metrics as read

    return read(path) if path.is_file() else {}


def _row_files(folder: Path) -> tuple[dict, dict, dict] | None:
    """(record, eval summary, metrics series) of a finished row, or None."""
    if not ((folder / "record.json").is_file() and (folder / "eval.json").is_file()):
        return None
    return (json.loads((folder / "record.json").read_text()), json.loads((folder / "eval.json").read_text()),
            read_metrics(folder / "metrics.jsonl"))


def _wall_h(record: dict) -> float:
    return record.get("total_wall_s", record["wall_s"]) / 3600


def _last(series: dict[int, float], n: int = 10) -> float | None:
    """Mean of the last n iterations' values."""
    if not series:
        return None
    steps = sorted(series)[-n:]
    return sum(series[s] for s in steps) / len(steps)


def _terms_cell(metrics: dict) -> str:
    """Episode length and each reward term's sum per episode, before adaptation, over the last 10 iterations."""
    length = _last(metrics.get("train/episode_length_pre", {}))
    terms = {k[len("train/reward_"):-len("_pre")]: _last(v) for k, v in metrics.items()
             if k.startswith("train/reward_") and k.endswith("_pre")}
    if length is None:
        return "—"
    cell = f"{length:.0f} steps"
    return cell + "; " + ", ".join(f"{k} {v:+.0f}" for k, v in sorted(terms.items())) if terms else cell


def table_total(table: str, recorded: int, todo: list[str], hours: float) -> list[str]:
    """The line under a `scripts/reproduce.py <table>` table: the wall time of its rows recorded so far, and the rows
    still to run."""
    left = f"; still to run: {', '.join(todo)}" if todo else ""
    return [f"The {recorded} of {recorded + len(todo)} rows of `scripts/reproduce.py {table}` recorded took "
            f"{hours:.1f} h of training and evaluation in all{left}.", ""]


def maml_paper_table(results: Path = ROOT / "results") -> list[str]:
    rows, hours, todo = [], 0.0, []
    for name, env, published, source in MAML_PAPER:
        files = _row_files(results / "maml_paper" / name)
        if files is None:
            todo.append(name)
            continue
        record, summary, metrics = files
        wall_h = _wall_h(record)
        hours += wall_h
        ret = summary["return"]
        cells = ", ".join(f"{m:.1f} ± {c:.1f}" for m, c in zip(ret["mean"], ret["ci95"]))
        clears = ret["mean"][1] - ret["ci95"][1] > ret["mean"][0] + ret["ci95"][0]
        pub = " / ".join(f"{x:+.1f}" for x in published) + f" ({source})" if published else source
        rows.append(f"| {env} | {summary.get('iteration', '')} | {summary['num_tasks']} | {cells} | "
                    f"{'yes' if clears else 'no'} | {_terms_cell(metrics)} | {pub} | {wall_h:.1f} h "
                    f"| `results/maml_paper/{name}/` |")
    if not rows:
        return []
    chart = results / "maml_paper" / "maml_rl.png"
    return ["The MAML paper's meta-RL table (`scripts/reproduce.py maml-rl`): MAML-TRPO with the paper's settings and, "
            "on MuJoCo, the paper's task definitions (`task.options.terms: maml_paper`, configs/maml_paper/); return "
            "on held-out tasks after 0, 1, 2, 3 inner steps, mean ± 95% CI over tasks; episode length and each reward "
            "term per episode before adaptation over the last 10 training iterations; wall time on 2 CPU cores:", "",
            "| env | iterations | test tasks | return after 0, 1, 2, 3 steps | step 1 above step 0 beyond both CIs "
            "| episode length; reward terms | published | wall time | files |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |", *rows, "",
            *table_total("maml-rl", len(rows), todo, hours),
            *([f"![MAML-RL: return before and after adaptation per iteration](results/maml_paper/{chart.name})", ""]
              if chart.is_file() else [])]


def maml_paper_chart(path: Path, results: Path = ROOT / "results") -> Path | None:
    """One column per env. Top: the training return before and after adaptation per iteration, the held-out
    evaluations as markers, the published values as dashed lines. Bottom: what the return before adaptation
    is made of along the run, each reward term's sum per episode, and the episode length (right axis): where a
    run does not adapt (e.g. episodes ending early) this shows why."""
    found = [(env, published, source, files) for name, env, published, source in MAML_PAPER
             if (files := _row_files(results / "maml_paper" / name)) is not None]
    if not found:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(found), figsize=(4.2 * len(found), 6.8), squeeze=False, sharex="col")
    for ax, (_, _, _, (_, _, metrics)) in zip(axes[1], found):
        _terms_panel(ax, metrics)
    for ax, (env, published, source, (_, _, metrics)) in zip(axes[0], found):
        for key, label in (("train/return_pre", "before adaptation"), ("train/return_post", "after one step")):
            steps = sorted(metrics.get(key, {}))
            ax.plot(steps, [metrics[key][s] for s in steps], lw=1, label=label)
        for key in ("eval/return_step0", "eval/return_step1"):
            steps = sorted(metrics.get(key, {}))
            ax.plot(steps, [metrics[key][s] for s in steps], "o", ms=3, label=f"held-out {key[12:]}")
        for value, style, label in zip(published or (), ("--", "-."), ("published before", "published after 1")):
            ax.axhline(value, color="k", ls=style, lw=0.8, label=label)
        ax.set_title(env, fontsize=9)
        ax.set_ylabel("return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    return _save(fig, path)


def _terms_panel(ax, metrics: dict) -> None:
    """Each reward term's sum per episode before adaptation, and the episode length on a right axis."""
    terms = sorted(k for k in metrics if k.startswith("train/reward_") and k.endswith("_pre"))
    for key in terms:
        steps = sorted(metrics[key])
        ax.plot(steps, [metrics[key][s] for s in steps], lw=0.8, label=key[len("train/reward_"):-len("_pre")])
    length = metrics.get("train/episode_length_pre", {})
    if length:
        right = ax.twinx()
        steps = sorted(length)
        right.plot(steps, [length[s] for s in steps], color="0.5", ls=":", lw=1, label="episode length")
        right.set_ylabel("episode length (steps)", fontsize=8)
        right.set_ylim(bottom=0)
        right.legend(fontsize=6, loc="lower right")
    ax.set_xlabel("meta-iteration")
    ax.grid(alpha=0.3)
    if terms:
        ax.set_ylabel("reward terms per episode, before adaptation", fontsize=8)
        ax.legend(fontsize=6, loc="upper left")
    else:
        ax.set_yticks([])
        ax.set_ylabel("(no reward terms logged)", fontsize=8)


def fisher_table(results: Path = ROOT / "results") -> list[str]:
    rows = []
    for folder in sorted((results / "fisher").glob("*/")):
        files = _row_files(folder)
        if files is None:
            continue
        record, summary, metrics = files
        ret = summary["return"]
        cells = ", ".join(f"{m:.1f} ± {c:.1f}" for m, c in zip(ret["mean"], ret["ci95"]))
        ratio = metrics.get("train/kl_model_ratio", {})
        late = [ratio[s] for s in sorted(ratio) if s > max(ratio) - 50] if ratio else []
        frac = metrics.get("train/step_frac", {})
        rate = metrics.get("time/iter_per_s", {})
        s_per_it = statistics.median(1 / v for v in rate.values() if v > 0) if rate else float("nan")
        rows.append(f"| {folder.name.replace('_', ' ')} | {summary.get('iteration', '')} | {cells} | "
                    f"{statistics.median(late) if late else float('nan'):.2f} | "
                    f"{sum(frac.values()) / max(len(frac), 1):.2f} | {s_per_it:.1f} s | {_wall_h(record):.1f} h "
                    f"| `results/fisher/{folder.name}/` |")
    if not rows:
        return []
    chart = results / "fisher" / "fisher.png"
    return ["MAML-TRPO's curvature, subsampled (the v5-terms MuJoCo configs) against full (`configs/maml_paper`; "
            "`scripts/reproduce.py fisher`): "
            "HalfCheetahDir with the paper's terms, same seed; held-out return after 0..3 steps at the end; the "
            "measured / modelled KL of the accepted steps (median over the last 50 iterations; 1 = the quadratic "
            "model is exact); the line search's mean step fraction; median seconds per iteration on 2 CPU cores:", "",
            "| curvature | iterations | return after 0, 1, 2, 3 steps | measured / modelled KL | step fraction "
            "| per iteration | wall time | files |", "| --- | --- | --- | --- | --- | --- | --- | --- |", *rows, "",
            *([f"![Fisher side by side](results/fisher/{chart.name})", ""] if chart.is_file() else [])]


def fisher_chart(path: Path, results: Path = ROOT / "results") -> Path | None:
    """Return before / after adaptation, measured / modelled KL and seconds per iteration, per setting."""
    found = [(folder.name, files) for folder in sorted((results / "fisher").glob("*/"))
             if (files := _row_files(folder)) is not None]
    if not found:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for i, (name, (_, _, metrics)) in enumerate(found):
        color = f"C{i}"
        for key, style in (("train/return_pre", ":"), ("train/return_post", "-")):
            steps = sorted(metrics.get(key, {}))
            axes[0].plot(steps, [metrics[key][s] for s in steps], style, color=color, lw=1,
                         label=f"{name}: {'before' if key.endswith('pre') else 'after one step'}")
        for ax, key in ((axes[1], "train/kl_model_ratio"), (axes[2], "time/iter_per_s")):
            series = metrics.get(key, {})
            steps = sorted(series)
            values = [series[s] if key != "time/iter_per_s" else 1 / series[s] for s in steps]
            ax.plot(steps, values, ".", ms=3, color=color, label=name)
    axes[0].set_ylabel("training return")
    axes[1].set_ylabel("measured / modelled KL of the accepted step")
    axes[1].set_yscale("log")
    axes[1].axhline(1.0, color="k", lw=0.8)
    axes[2].set_ylabel("seconds per iteration")
    axes[2].set_ylim(bottom=0)
    for ax in axes:
        ax.set_xlabel("meta-iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    import sys

    sys.path.insert(0, str(ROOT))
    from metarl.run.plots import save_figure

    return save_figure(fig, path)
