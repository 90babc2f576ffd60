#!/usr/bin/env python
"""The README's measured-results tables, generated from results/**/record.json (scripts/record.py).

    python scripts/results_table.py            # rewrite the block between the markers in README.md
    python scripts/results_table.py --print    # print it instead
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from metarl.algorithms import ALGORITHMS, DEFAULT  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_rl import fisher_chart, fisher_table, maml_paper_chart, maml_paper_table, table_total  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _wall_s(record: dict) -> float:
    """A run's wall time: over all its segments when it was resumed (total_wall_s), else its command's."""
    return record.get("total_wall_s", record["wall_s"])


def _steps(summary: dict) -> str:
    name = summary["metric"]
    cells = [("diverged" if m is None else f"{m:.3g} ± {c:.2g}") for m, c in zip(summary[name]["mean"], summary[name]["ci95"])]
    return f"{name} after {summary['steps'][0]}..{summary['steps'][-1]} steps: " + ", ".join(cells)


#: published accuracy (%) on the full Omniglot (1,200 training characters), (5w1s, 5w5s, 20w1s): the few-shot
#: table's anchors, as cited in the issue that asked for it and in the Meta-SGD paper (Reptile's are transductive)
PUBLISHED = {"MAML": (98.7, 99.9, 95.8), "FOMAML": (98.3, 99.2, 89.4), "Reptile": (97.7, 99.5, 89.4),
             "iMAML": (99.5, 99.7, 96.2), "Meta-SGD": (99.5, 99.9, 95.9), "ProtoNets": (98.8, 99.7, 96.0)}
SETTING_COLUMN = {(5, 1): 0, (5, 5): 1, (20, 1): 2}


def learner_name(learner: dict) -> str:
    """The table's name of a run's learner: the algorithm's title, or the MAML variant its options make."""
    spec = ALGORITHMS[learner.get("algo", DEFAULT)]
    name = spec.title
    if spec.title == "MAML":
        if learner.get("first_order"):
            name = "FOMAML"
        elif learner.get("learn_inner_lr"):
            name = "Meta-SGD"
        elif learner.get("hypergradient", "unrolled") == "implicit":
            name = "iMAML"
        elif learner.get("hypergradient", "unrolled") != "unrolled":
            name += f" ({learner['hypergradient']} hypergradient)"
    if learner.get("augmentation", "none") != "none":
        name += f" + {learner['augmentation']} augmentation"
    return name


def omniglot_rows() -> list[dict]:
    """One entry per run under results/omniglot/ (eval.json, config.yaml, record.json; the few-shot table's rows
    also eval_support.json and memory.json)."""
    rows = []
    for path in sorted((ROOT / "results" / "omniglot").glob("*/record.json")):
        d = path.parent
        if not ((d / "eval.json").is_file() and (d / "config.yaml").is_file()):
            continue
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        summary = json.loads((d / "eval.json").read_text())
        support = json.loads((d / "eval_support.json").read_text()) if (d / "eval_support.json").is_file() else None
        memory = json.loads((d / "memory.json").read_text()) if (d / "memory.json").is_file() else None
        options = cfg["task"].get("options", {})
        rows.append({"dir": d, "learner": learner_name(cfg["learner"]), "ways": options.get("ways", 5),
                     "train_ways": options.get("train_ways") or options.get("ways", 5),
                     "shots": summary["protocol"]["k_support"], "eval": summary, "support": support, "memory": memory,
                     "wall_s": _wall_s(json.loads(path.read_text()))})
    order = {(5, 1): 0, (20, 1): 1, (5, 5): 2}
    return sorted(rows, key=lambda r: (order.get((r["ways"], r["shots"]), 9), r["learner"]))


def omniglot_table() -> list[str]:
    """The few-shot table: learner, task, held-out accuracy before and after adaptation (transductive batch norm,
    as trained, and with each query normalised by its task's support statistics), wall time, peak memory of
    one meta-iteration, the published full-Omniglot figure."""
    rows = omniglot_rows()
    if not rows:
        return []
    lines = []
    for r in rows:
        e = r["eval"]
        acc = e["accuracy"]
        cell = lambda a, i: f"{100 * a['mean'][i]:.1f} ± {100 * a['ci95'][i]:.1f}"  # noqa: E731
        support = f"{cell(r['support']['accuracy'], -1)}" if r["support"] else "—"
        memory = f"{r['memory']['peak_mb']:.0f} MB" if r["memory"] else "—"
        published = PUBLISHED.get(r["learner"], (None,) * 3)[SETTING_COLUMN.get((r["ways"], r["shots"]), 0)]
        trained = f" (trained {r['train_ways']}-way)" if r["train_ways"] != r["ways"] else ""
        lines.append(f"| {r['learner']} | {r['ways']}-way {r['shots']}-shot{trained} | {cell(acc, 0)} | {cell(acc, -1)} "
                     f"(after {e['steps'][-1]}) | {support} | {e['num_tasks']} | {e.get('iteration', '')} "
                     f"| {r['wall_s'] / 60:.0f} min | {memory} | {published or '—'} "
                     f"| `{r['dir'].relative_to(ROOT).as_posix()}/` |")
    return ["Omniglot few-shot table (`scripts/reproduce.py fewshot`), small archives (train: images_background_small1; "
            "test: the alphabets only small2 has), 4 conv blocks; accuracy % on held-out tasks, mean ± 95% CI over "
            "tasks, with the batch's own statistics (transductive, as trained) and with each query normalised by "
            "its task's support statistics; wall time on 2 CPU cores, training and the final evaluation; peak "
            "resident memory of one meta-iteration; the published figure is on the full Omniglot (1,200 training "
            "characters: ours has 136), so only the order of the learners is comparable:", "",
            "| learner | task | before adaptation | adapted (transductive) | adapted (support statistics) | test tasks "
            "| iterations | wall time | peak memory | published (full Omniglot) | files |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", *lines, "", *fewshot_total(rows),
            *(["![accuracy against wall time](results/omniglot/fewshot.png)", ""]
              if (ROOT / "results" / "omniglot" / "fewshot.png").is_file() else [])]


def fewshot_total(rows: list[dict]) -> list[str]:
    """`table_total` for the `reproduce.py fewshot` rows among the Omniglot results."""
    from reproduce import FEWSHOT

    names = [row.name for row in FEWSHOT]
    done = [r for r in rows if r["dir"].name in names]
    recorded = {r["dir"].name for r in done}
    todo = [n for n in names if n not in recorded]
    return table_total("fewshot", len(done), todo, sum(r["wall_s"] for r in done) / 3600)


def omniglot_chart(path: Path) -> Path | None:
    """Accuracy after adaptation against wall time, one panel per setting, one marker per learner."""
    rows = [r for r in omniglot_rows() if r["support"] is not None]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    settings = sorted({(r["ways"], r["shots"]) for r in rows}, key=lambda s: (s[1], s[0]))
    # one colour and marker per learner in every panel, so a learner is found at a glance across settings
    learners = sorted({r["learner"] for r in rows})
    style = {name: (f"C{i % 10}", "osD^vP*Xhp"[i % 10]) for i, name in enumerate(learners)}
    fig, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings), 3.6), squeeze=False)
    for ax, (ways, shots) in zip(axes[0], settings):
        for r in (r for r in rows if (r["ways"], r["shots"]) == (ways, shots)):
            acc = r["eval"]["accuracy"]
            color, marker = style[r["learner"]]
            ax.errorbar(r["wall_s"] / 60, 100 * acc["mean"][-1], yerr=100 * acc["ci95"][-1], fmt=marker,
                        color=color, capsize=3, label=r["learner"])
        ax.set_title(f"Omniglot {ways}-way {shots}-shot", fontsize=9)
        ax.set_xscale("log")  # rows span minutes to hours
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel("wall time on 2 CPU cores (min, log scale)")
        ax.set_ylabel("held-out accuracy % (transductive)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


#: the "all things can be meta" table's rows, in order: config, problem, role
META_COMPONENTS = [
    ("noisy_omniglot_none", "40% label noise", "baseline: plain training on the noisy labels"),
    ("noisy_omniglot_l2rw", "40% label noise", "learned example weights (L2RW, Ren et al. 2018)"),
    ("noisy_omniglot_mwn", "40% label noise", "learned example weights (Meta-Weight-Net)"),
    ("noisy_omniglot_clean", "40% label noise", "oracle: the clean labels"),
    ("noisy_omniglot_clean", "small data (clean labels)", "baseline: no augmentation"),
    ("omniglot100_augment_learned", "small data (clean labels)", "learned augmentation magnitudes"),
    ("omniglot100_augment_fixed", "small data (clean labels)", "oracle: hand-set augmentation"),
    ("noisy_omniglot_clean", "architecture (clean labels)", "hand-designed: the 4-block conv net"),
    ("darts_omniglot", "architecture (clean labels)", "searched cell (DARTS), retrained from scratch"),
]


def _meta_component_runs(config: str) -> list[tuple[dict, dict, dict]]:
    """(record, final evaluation, config) of each seed of a config; DARTS: its one search + retrain run."""
    if config == "darts_omniglot":
        where = ROOT / "results" / "darts_omniglot"
        paths = [where / "record.json"] if (where / "retrain_eval.json").is_file() else []
        final = "retrain_eval.json"
    else:
        paths = sorted((ROOT / "results" / "meta_components" / config).glob("seed*/record.json"))
        final = "eval.json"
    return [(json.loads(p.read_text()), json.loads((p.parent / final).read_text()),
             yaml.safe_load((p.parent / "config.yaml").read_text())) for p in paths if (p.parent / final).is_file()]


def meta_components_table() -> list[str]:
    """results/meta_components/<config>/seed<k>/: one row per (problem, config), final held-out accuracy as
    mean ± 95% CI over the seeds (Student's t), each seed's value, mean wall time."""
    import sys

    sys.path.insert(0, str(ROOT))
    from metarl.core.stats import seed_mean_ci95

    rows = []
    for config, problem, role in META_COMPONENTS:
        runs = _meta_component_runs(config)
        if not runs:
            continue
        accs = [100 * e["accuracy"]["mean"][-1] for _, e, _ in runs]
        mean, ci = seed_mean_ci95(accs)
        cell = f"{mean:.1f} ± {ci:.1f}" if len(accs) > 1 else f"{mean:.1f} (one seed)"
        wall = sum(_wall_s(r) for r, _, _ in runs) / len(runs)
        cfg = runs[0][2]
        budget = (f"search {cfg['train']['iterations']} + retrain {cfg['learner']['retrain_iterations']}"
                  if config == "darts_omniglot" else str(cfg["train"]["iterations"]))
        where = "results/darts_omniglot/" if config == "darts_omniglot" else f"results/meta_components/{config}/"
        rows.append(f"| {problem} | {role} | `configs/{config}.yaml` | {budget} | {cell} "
                    f"| {', '.join(f'{a:.1f}' for a in accs)} | {wall / 60:.0f} min | `{where}` |")
    if not rows:
        return []
    return ["All things can be meta: 100-class Omniglot (15 training drawings per class, 1 clean validation drawing, "
            "4 test drawings), a 4-block conv net (DARTS: its searched cell) trained for the budget shown; held-out accuracy %, "
            "mean ± 95% CI over seeds (Student's t), and the mean wall time per run on 2 CPU cores (runs shared "
            "the cores with another training run: see each record's note):", "",
            "| problem | what is meta-learned | config | iterations | accuracy | per seed | wall time | files |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |", *rows, ""]


#: MuJoCo locomotion with MAML-TRPO (results/<dir>/): directory, env, the published figure beside it
MUJOCO = [
    ("halfcheetah_dir", "HalfCheetahDir", "about −51 before, +293 after one step (a pytorch-maml-rl reproduction, "
                                          "control cost 0.05·‖a‖²: see above); MAML paper Fig. 5"),
    ("halfcheetah_vel", "HalfCheetahVel", "MAML paper Fig. 5"),
    ("ant_dir", "AntDir", "MAML paper Fig. 5"),
    ("ant_vel", "AntVel", "MAML paper Fig. 5"),
    ("ant_goal", "AntGoal", "MAML paper Fig. 5"),
]

#: published Meta-World success rates (%) to set beside ours: algorithm, benchmark, train, test, source
METAWORLD_PUBLISHED = [
    ("MAML-TRPO", "ML10", 21.0, 13.2, "Atamuradov 2025, arXiv 2511.12383"),
    ("MAML", "ML10", 25.0, 36.0, "Yu et al. 2019 (Meta-World paper, V1 reward)"),
]


def mujoco_table() -> list[str]:
    """results/<env>/: return after 0..k inner steps on held-out tasks (mean ± 95% CI), whether the one-step
    return clears the pre-adaptation one by more than both CIs, the published figure, wall time."""
    rows = []
    for where, env, published in MUJOCO:
        path = ROOT / "results" / where / "record.json"
        if not (path.is_file() and (path.parent / "eval.json").is_file()):
            continue
        record, summary = json.loads(path.read_text()), json.loads((path.parent / "eval.json").read_text())
        ret = summary["return"]
        cells = ", ".join(f"{m:.1f} ± {c:.1f}" for m, c in zip(ret["mean"], ret["ci95"]))
        clears = ret["mean"][1] - ret["ci95"][1] > ret["mean"][0] + ret["ci95"][0]
        rows.append(f"| {env} | {summary.get('iteration', '')} | {summary['num_tasks']} | {cells} "
                    f"| {'yes' if clears else 'no'} | {published} | {_wall_s(record) / 3600:.1f} h | `results/{where}/` |")
    if not rows:
        return []
    return ["MuJoCo locomotion, MAML-TRPO with the MAML paper's settings (meta-batch 40, 20 episodes per task, H = 200, "
            "one inner step with lr 0.1, max KL 0.01, linear baseline); return on held-out tasks after 0, 1, 2, 3 "
            "inner steps, mean ± 95% CI over tasks; wall time on 2 CPU cores (learning curves: `learning_curve.png`):", "",
            "| env | iterations | test tasks | return after 0, 1, 2, 3 steps | step 1 above step 0 beyond both CIs "
            "| published | wall time | files |", "| --- | --- | --- | --- | --- | --- | --- | --- |", *rows, ""]


def metaworld_table() -> list[str]:
    """results/metaworld/<run>/: Meta-World's own evaluation (metaworld_eval.json: success on train and test
    goals, mean ± 95% CI over repeats) beside our evaluator's held-out success before and after adaptation, and
    published success rates."""
    rows = []
    for path in sorted((ROOT / "results" / "metaworld").glob("*/record.json")):
        official = path.parent / "metaworld_eval.json"
        if not official.is_file():
            continue
        record, mw = json.loads(path.read_text()), json.loads(official.read_text())
        algo = {"maml": "MAML-TRPO", "rl2": "RL²"}.get(mw["algo"], mw["algo"])
        bench = f"{mw['benchmark']} {mw['env_name']}".strip()
        v, prot = mw["versions"], mw["protocol"]
        cell = lambda split: f"{100 * mw[split]['success_mean']:.1f} ± {100 * mw[split]['success_ci95']:.1f}"  # noqa: E731
        ours = ""
        if (path.parent / "eval.json").is_file():
            success = json.loads((path.parent / "eval.json").read_text()).get("success")
            if success:
                ours = " → ".join(f"{100 * m:.0f}" for m in success["mean"])
        sub_envs = f"{prot['meta_batch_size']} sub-envs" if prot["meta_batch_size"] else "one sub-env per skill"
        protocol = (f"{prot['repeats']} repeats (goals) × {sub_envs}, {prot['adaptation_episodes']} "
                    f"adaptation + {prot['evaluation_episodes']} evaluation episodes of {prot.get('max_episode_steps', 500)} steps")
        rows.append(f"| {algo} | {bench} | reward {v.get('reward', '')}, Meta-World {v.get('metaworld', '')}, "
                    f"MuJoCo {v.get('mujoco', '')} | {mw['iteration']} | {ours} | {cell('train')} | {cell('test')} "
                    f"| {protocol} | {_wall_s(record) / 60:.0f} + {mw.get('wall_s', 0) / 60:.0f} min | `{path.parent.relative_to(ROOT).as_posix()}/` |")
    if not rows:
        return []
    published = [f"| {a} (published) | {b} | as published | | | {tr:.1f} | {te:.1f} | {src} | | |"
                 for a, b, tr, te, src in METAWORLD_PUBLISHED]
    return ["Meta-World, scored by Meta-World's own meta-learning evaluation (`scripts/evaluate_metaworld.py`: "
            "success = the success flag at any step; mean ± 95% CI over repeats), beside our evaluator's held-out "
            "success % per episode or inner step, and published success rates; wall time: training + Meta-World's "
            "evaluation, on 2 CPU cores (see each record's note):", "",
            "| algorithm | benchmark | versions | iterations | ours: held-out success % by step | "
            "train success % | test success % | protocol / source | wall time | files |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", *rows, *published, ""]


def tables() -> str:
    runs, benches = [], []
    for path in sorted((ROOT / "results").glob("**/record.json")):
        if path.parent.parent.name == "omniglot" and (path.parent / "eval.json").is_file():
            continue  # in the Omniglot table
        if "meta_components" in path.parts or path.parent.name == "darts_omniglot":
            continue  # in the meta-components table
        if "metaworld" in path.parts or path.parent.name in {where for where, _, _ in MUJOCO}:
            continue  # in the Meta-World or the MuJoCo table
        if path.parent.parent.name in ("maml_paper", "fisher"):
            continue  # in the MAML paper's table or the Fisher side-by-side
        record = json.loads(path.read_text())
        where = f"`{path.parent.relative_to(ROOT).as_posix()}/`"
        eval_json = path.parent / "eval.json"
        m = record["machine"]
        machine = f"{m['gpu'] + ', ' if m.get('gpu') else ''}{m['cpus']} CPU cores, torch {m['torch']}"
        note = f"; {record['note']}" if record.get("note") else ""
        if eval_json.is_file():
            summary = json.loads(eval_json.read_text())
            result = f"{summary['num_tasks']} held-out tasks, {_steps(summary)}"
            retrain, genotype = path.parent / "retrain_eval.json", path.parent / "genotype.json"
            if retrain.is_file() and genotype.is_file():  # an architecture search and its retrained cell
                result = (f"search network: {result}; derived cell `{json.loads(genotype.read_text())['genotype']}` "
                          f"retrained: {_steps(json.loads(retrain.read_text()))}")
            runs.append(f"| `{record['command'].split('scripts/', 1)[-1]}` | {result} | {_wall_s(record):.0f} s "
                        f"({machine}{note}) | {where} |")
        elif "figures" in record:
            figures = ", ".join(f"{k} {'yes' if v else 'no'}" if isinstance(v, bool) else
                                f"{k} {v:,.0f}" if abs(v) >= 1000 else f"{k} {v:.4g}" for k, v in record["figures"].items()
                                if isinstance(v, (int, float)))
            benches.append(f"| `{record['command'].split('scripts/', 1)[-1]}` | {figures} | {machine}{note} | {where} |")
    out = [*omniglot_table(), *meta_components_table(), *maml_paper_table(), *fisher_table(), *mujoco_table(),
           *metaworld_table(), "| command | held-out result (mean ± 95% CI) | wall time | files |",
           "| --- | --- | --- | --- |", *runs]
    if benches:
        out += ["", "| benchmark | figures (its last JSON line) | machine | files |", "| --- | --- | --- | --- |", *benches]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--print", action="store_true")
    a = p.parse_args()
    block = tables()
    if a.print:
        print(block)
        return
    omniglot_chart(ROOT / "results" / "omniglot" / "fewshot.png")
    maml_paper_chart(ROOT / "results" / "maml_paper" / "maml_rl.png")
    fisher_chart(ROOT / "results" / "fisher" / "fisher.png")
    block = tables()  # with the chart's line, now that it exists
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"error: README.md lacks the markers {START} / {END}")
    head, rest = text.split(START, 1)
    readme.write_text(head + START + "\n" + block + "\n" + END + rest.split(END, 1)[1])
    print(f"README.md: {block.count(chr(10)) + 1} table lines from results/")


if __name__ == "__main__":
    main()
