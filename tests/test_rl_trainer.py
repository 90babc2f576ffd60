"""RL config, trainer and evaluation: unknown keys fail, a run reproduces from its seed, resume continues
exactly, evaluation writes its files, and the scripts print a one-line error on bad input."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metarl.config import from_dict, load_yaml
from metarl.errors import ConfigError
from metarl.rl.config import RLConfig
from metarl.rl.trainer import RLTrainer

ROOT = Path(__file__).resolve().parents[1]


def tiny_cfg(run_dir, algo="maml_trpo", iterations=2) -> RLConfig:
    cfg = from_dict(RLConfig, {
        "env": {"name": "Navigation2D", "episodes_per_task": 3, "horizon": 10},
        "policy": {"hidden": [8, 8]},
        "algo": {"algo": algo, "inner_steps": 2},
        "train": {"iterations": iterations, "meta_batch_size": 3, "checkpoint_every": 1},
        "eval": {"num_tasks": 4, "episodes_per_task": 2, "steps": 2, "plot_tasks": 2},
        "log": {"wandb": "disabled", "progress": False, "console": False},
        "run_dir": str(run_dir),
    })
    return cfg.validate()


def test_unknown_and_bad_keys_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="valid keys"):
        from_dict(RLConfig, {"algo": {"inner_lrr": 0.1}})
    with pytest.raises(ConfigError, match="maml_trpo"):
        from_dict(RLConfig, {"algo": {"algo": "sac"}})
    with pytest.raises(ConfigError, match="Navigation2D"):
        from_dict(RLConfig, {"env": {"name": "Nope"}}).validate()
    with pytest.raises(ConfigError, match="max_kl"):
        from_dict(RLConfig, {"algo": {"max_kl": 0}}).validate()


def test_shipped_configs_load():
    for path in sorted((ROOT / "configs").glob("nav2d_*.yaml")):
        load_yaml(path, RLConfig).validate()


@pytest.mark.parametrize("algo", ["maml_trpo", "maml_ppo", "reptile"])
def test_same_seed_same_run_and_eval_files(tmp_path, algo):
    results = [RLTrainer(tiny_cfg(tmp_path / f"r{i}", algo)).run_training() for i in range(2)]
    assert results[0]["return"]["mean"] == results[1]["return"]["mean"]
    assert len(results[0]["return"]["mean"]) == 3
    for name in ("eval.json", "eval.png", "trajectories.png", "checkpoint.pt"):
        assert (tmp_path / "r0" / name).is_file()
    saved = json.loads((tmp_path / "r0" / "eval.json").read_text())
    assert saved["return"]["mean"] == results[0]["return"]["mean"]


def test_resume_continues_exactly(tmp_path):
    full = RLTrainer(tiny_cfg(tmp_path / "full", iterations=3))
    full.run_training()
    part = RLTrainer(tiny_cfg(tmp_path / "part", iterations=2))
    part.run_training()
    cfg = tiny_cfg(tmp_path / "part", iterations=3)
    cfg.resume = True
    resumed = RLTrainer(cfg)
    assert resumed.iteration == 2
    resumed.run_training()
    assert all(torch.equal(full.theta[k], resumed.theta[k]) for k in full.theta)


def test_train_script_reports_bad_config_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("algo:\n  inner_lrr: 0.1\n")
    p = subprocess.run([sys.executable, str(ROOT / "scripts/train_rl.py"), "--config", str(bad)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1].startswith("error: unknown config key 'algo.inner_lrr'")


def test_evaluation_adapts_with_the_learned_inner_lrs(tmp_path):
    from metarl.rl.build import build_rl
    from metarl.rl.evaluate import evaluate_rl
    from metarl.rl.maml_rl import LOG_LR_PREFIX

    fixed_cfg = tiny_cfg(tmp_path / "fixed")
    learned_cfg = tiny_cfg(tmp_path / "learned")
    learned_cfg.algo.learn_inner_lr = True
    fixed_run, learned_run = build_rl(fixed_cfg), build_rl(learned_cfg)
    theta = learned_run.algo.init_params()
    assert {k for k in theta if k.startswith(LOG_LR_PREFIX)} == {LOG_LR_PREFIX + k for k in fixed_run.algo.init_params()}
    policy_only = {k: v for k, v in theta.items() if not k.startswith(LOG_LR_PREFIX)}
    ref = evaluate_rl(fixed_cfg, fixed_run, policy_only)["return"]["mean"]
    same = evaluate_rl(learned_cfg, learned_run, theta)["return"]["mean"]
    assert same == pytest.approx(ref, abs=1e-4)
    big = {k: (v + 3.0 if k.startswith(LOG_LR_PREFIX) else v) for k, v in theta.items()}
    moved = evaluate_rl(learned_cfg, learned_run, big)["return"]["mean"]
    assert moved[0] == ref[0] and moved[1:] != pytest.approx(ref[1:], abs=1e-3)
    # and a learned-lr run trains, checkpoints its step sizes and resumes
    learned_cfg.train.iterations = 1
    trainer = RLTrainer(learned_cfg)
    trainer.run_training()
    saved = torch.load(tmp_path / "learned" / "checkpoint.pt", weights_only=True)["meta_params"]["theta"]
    assert any(k.startswith(LOG_LR_PREFIX) for k in saved)


def test_evaluation_uses_the_step_lr_scales(tmp_path):
    from metarl.rl.build import build_rl
    from metarl.rl.evaluate import evaluate_rl

    results = []
    for scales in [(), (1.0, 1e-6)]:
        cfg = tiny_cfg(tmp_path / f"s{len(scales)}")
        cfg.algo.step_lr_scales = scales
        run = build_rl(cfg)
        results.append(evaluate_rl(cfg, run, run.algo.init_params())["return"]["mean"])
    plain, scaled = results
    # the same first step; the second one is 1e6 times shorter
    assert scaled[:2] == plain[:2] and scaled[2] != pytest.approx(plain[2], abs=1e-4)
