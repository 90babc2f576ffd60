"""MuJoCo task distributions without MuJoCo: `import envs` must not need it, and the task parameters are data."""
import subprocess
import sys

import torch

from envs.base import checkerboard_split_of
import envs


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_import_envs_without_mujoco():
    code = ("import sys; sys.modules['mujoco'] = None; sys.modules['mujoco_warp'] = None\n"
            "import envs, torch\n"
            "assert 'HalfCheetahVel' in envs.known() and envs.family('halfcheetah_vel').is_rl\n"
            "print(envs.make_distribution('ant_goal').sample(2, torch.Generator().manual_seed(0))['goal'].shape)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "torch.Size([2, 2])" in out.stdout


def test_velocity_goal_and_direction_splits():
    for dist, hi in ((envs.make_distribution("HalfCheetahVel"), 2.0), (envs.make_distribution("AntVel"), 3.0)):
        for split in ("train", "test"):
            v = dist.sample(500, gen(0), split)["velocity"]
            assert v.min() >= 0 and v.max() < hi and v.max() > 0.8 * hi and v.min() < 0.2 * hi  # spans the range
            assert set(checkerboard_split_of((v.double() / hi)[:, None])) == {split}  # disjoint halves
        assert torch.equal(dist.sample(5, gen(7))["velocity"], dist.sample(5, gen(7))["velocity"])
    goals = envs.make_distribution("AntGoal").sample(500, gen(1), "test")["goal"]
    assert goals.norm(dim=1).max() <= 3.0 and goals.norm(dim=1).max() > 2.8
    dirs = envs.make_distribution("AntDir").sample(100, gen(2))["direction"]
    assert set(dirs.tolist()) == {-1.0, 1.0}


def test_mujoco_configs_load_with_paper_settings():
    import glob

    from metarl.run.config import load_yaml

    paths = [p for p in glob.glob("configs/*_maml_trpo.yaml") if p.split("/")[-1].startswith(("halfcheetah", "ant"))]
    assert len(paths) == 5
    for path in paths:
        cfg = load_yaml(path).validate()
        assert envs.family(cfg.task.name).backends
        assert (cfg.task.horizon, cfg.rl.episodes_per_task, cfg.train.meta_batch_size) == (200, 20, 40)
        assert (cfg.learner.algo, cfg.learner.inner_lr, cfg.outer.optimizer, cfg.outer.max_kl) == ("maml", 0.1, "trpo", 0.01)
