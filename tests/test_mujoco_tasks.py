"""MuJoCo task distributions without MuJoCo: `import envs` must not need it, and the task parameters are data."""
import subprocess
import sys

import torch

from envs.base import checkerboard_split_of
from envs.mujoco import BATCHED_NAMES


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_import_envs_without_mujoco():
    code = ("import sys; sys.modules['mujoco'] = None; sys.modules['mujoco_warp'] = None\n"
            "import envs, torch\n"
            "from envs.batched_registry import known_batched_envs\n"
            "assert 'HalfCheetahVel' in known_batched_envs()\n"
            "print(envs.make_task_distribution('ant_goal').sample(2, torch.Generator().manual_seed(0))['goal'].shape)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "torch.Size([2, 2])" in out.stdout


def test_velocity_goal_and_direction_splits():
    for dist, hi in ((BATCHED_NAMES["HalfCheetahVel"](), 2.0), (BATCHED_NAMES["AntVel"](), 3.0)):
        for split in ("train", "test"):
            v = dist.sample(500, gen(0), split)["velocity"]
            assert v.min() >= 0 and v.max() < hi and v.max() > 0.8 * hi and v.min() < 0.2 * hi  # spans the range
            assert set(checkerboard_split_of((v.double() / hi)[:, None])) == {split}  # disjoint halves
        assert torch.equal(dist.sample(5, gen(7))["velocity"], dist.sample(5, gen(7))["velocity"])
    goals = BATCHED_NAMES["AntGoal"]().sample(500, gen(1), "test")["goal"]
    assert goals.norm(dim=1).max() <= 3.0 and goals.norm(dim=1).max() > 2.8
    dirs = BATCHED_NAMES["AntDir"]().sample(100, gen(2))["direction"]
    assert set(dirs.tolist()) == {-1.0, 1.0}


def test_mujoco_configs_load_with_paper_settings():
    import glob

    import pytest

    config = pytest.importorskip("metarl.rl.config")
    from metarl.config import load_yaml

    paths = [p for p in glob.glob("configs/*_maml_trpo.yaml") if p.split("/")[-1].startswith(("halfcheetah", "ant"))]
    assert len(paths) == 5
    for path in paths:
        cfg = load_yaml(path, config.RLConfig).validate()
        assert cfg.env.name in BATCHED_NAMES
        assert (cfg.env.horizon, cfg.env.episodes_per_task, cfg.train.meta_batch_size) == (200, 20, 40)
        assert (cfg.algo.algo, cfg.algo.inner_lr, cfg.algo.max_kl) == ("maml_trpo", 0.1, 0.01)
