"""Every shipped config through the one entry point: each loads and validates, trains 2 iterations of a small
override of itself (same family, learner and outer step; smaller sizes), and its checkpoint evaluates."""
import importlib.util
from pathlib import Path

import pytest

import envs
from envs.omniglot_data import default_data_dir
from metarl.run.cli import parse_config
from metarl.run.config import Config, load_yaml, to_dict
from metarl.run.evaluate import evaluate_checkpoint
from metarl.run.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))

# per family: the sizes that make 2 iterations take about a second
SMALL = {
    "supervised": ["--train.meta_batch_size", "2", "--train.no_compile", "--eval.num_tasks", "4", "--eval.batch_size", "4",
                   "--eval.steps", "2", "--eval.plot_tasks", "1"],
    "Omniglot": ["--task.k_query", "1", "--model.channels", "8", "--eval.k_query", "2"],
    "NoisyOmniglot": ["--task.k_support", "16", "--task.k_query", "8", "--model.channels", "8", "--eval.k_query", "4"],
    "rl": ["--task.horizon", "10", "--rl.episodes_per_task", "2", "--train.meta_batch_size", "2", "--eval.num_tasks", "2",
           "--eval.episodes_per_task", "2", "--eval.steps", "2", "--eval.plot_tasks", "1", "--model.hidden", "8", "8"],
    # one goal per skill: 10 training skills, 5 held-out ones
    "MetaWorldML10": ["--train.meta_batch_size", "10", "--eval.num_tasks", "5", "--train.eval_tasks", "5",
                      "--rl.episodes_per_task", "1", "--eval.episodes_per_task", "1"],
}
COMMON = ["--train.iterations", "2", "--train.time_limit_s", "0", "--train.eval_every", "1", "--train.eval_tasks", "2",
          "--train.threads", "0", "--log.wandb", "disabled", "--log.no_progress", "--log.no_console", "--device", "auto"]


def small(path: Path, run_dir: Path) -> Config:
    cfg = load_yaml(path)
    fam = envs.family(cfg.task.name)
    flags = COMMON + SMALL["rl" if fam.is_rl else "supervised"] + SMALL.get(fam.name, [])
    if cfg.model.arch in ("conv", "cells"):
        flags = [f for f in flags if f != "--model.hidden"]
    if cfg.learner.algo == "rl2":  # the GRU's one width; no more minibatches than the 2 tasks
        flags += ["--model.hidden", "8", "--outer.minibatches", str(min(2, cfg.outer.minibatches))]
    flags += ["--run_dir", str(run_dir)]
    return parse_config(flags, base=to_dict(cfg))


def test_every_config_loads_and_validates():
    assert len(CONFIGS) >= 20
    families = set()
    for path in CONFIGS:
        cfg = load_yaml(path).validate()
        families.add((envs.family(cfg.task.name).is_rl, cfg.learner.algo, cfg.outer.optimizer))
    # supervised MAML / Reptile / LSTM, meta-RL with TRPO, PPO and Reptile: all through one schema
    assert {(False, "maml", "adam"), (False, "reptile", "adam"), (False, "lstm", "adam"), (True, "maml", "trpo"),
            (True, "maml", "ppo"), (True, "reptile", "sgd"), (True, "rl2", "ppo")} <= families


def _skip_without_what_it_needs(cfg: Config) -> None:
    fam = envs.family(cfg.task.name)
    if fam.backends and importlib.util.find_spec("mujoco") is None:
        pytest.skip("MuJoCo is not installed (the mujoco extra)")
    if fam.name.startswith("MetaWorld") and importlib.util.find_spec("metaworld") is None:
        pytest.skip("Meta-World is not installed (the metaworld extra)")
    if fam.name in ("Omniglot", "NoisyOmniglot"):
        archives = str(cfg.task.options.get("archives", "images_background_small1,images_background_small2")).split(",")
        if not all((default_data_dir() / f"{a.strip()}.zip").is_file() for a in archives):
            pytest.skip(f"Omniglot archives {archives} not in {default_data_dir()}")


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT / "configs").with_suffix("")) for p in CONFIGS])
def test_every_config_trains_two_iterations_and_its_checkpoint_evaluates(path, tmp_path):
    cfg = small(path, tmp_path / "run")
    _skip_without_what_it_needs(cfg)
    result = Trainer(cfg).run()
    assert result["iterations"] == 2 and (tmp_path / "run" / "eval.json").is_file()
    summary, paths = evaluate_checkpoint(tmp_path / "run" / "checkpoint.pt", ["--eval.steps", "1"], tmp_path / "ev.json")
    assert summary["steps"] == [0, 1] and summary["iteration"] == 2 and paths["json"].is_file()
    assert summary[summary["metric"]]["mean"][0] is not None
