import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs
from envs.base import checkerboard_split, checkerboard_split_of


def test_episode_shapes_and_targets(gen):
    dist = envs.make_distribution("sinusoid")
    ep = dist.sample_episode(25, 10, 7, gen)
    assert ep.support[0].shape == (25, 10, 1) and ep.support[1].shape == (25, 10, 1)
    assert ep.query[0].shape == (25, 7, 1)
    a, b = ep.tasks["amplitude"], ep.tasks["phase"]
    assert ((a >= 0.1) & (a <= 5.0)).all() and ((b >= 0) & (b <= np.pi)).all()
    x, y = ep.support
    assert ((x >= -5) & (x <= 5)).all()
    torch.testing.assert_close(y, a[:, None, None] * torch.sin(x - b[:, None, None]))


def test_same_seed_same_tasks_and_splits_are_disjoint():
    dist = envs.SinusoidTasks()
    t1 = dist.sample(500, torch.Generator().manual_seed(3), "train")
    t2 = dist.sample(500, torch.Generator().manual_seed(3), "train")
    assert torch.equal(t1["amplitude"], t2["amplitude"])
    test = dist.sample(500, torch.Generator().manual_seed(3), "test")
    u = lambda t: torch.stack([(t["amplitude"] - 0.1) / 4.9, t["phase"] / np.pi], 1)  # noqa: E731
    assert set(checkerboard_split_of(u(t1))) == {"train"}
    assert set(checkerboard_split_of(u(test))) == {"test"}
    # both halves cover the whole range of each parameter
    for t in (t1, test):
        assert t["amplitude"].min() < 0.5 and t["amplitude"].max() > 4.5
        assert t["phase"].min() < 0.3 and t["phase"].max() > np.pi - 0.3


def test_checkerboard_keeps_uniform_marginals():
    u = torch.rand(200_000, 2, generator=torch.Generator().manual_seed(0))
    v = checkerboard_split(u, "test")
    hist = torch.histc(v[:, 1], bins=8, min=0, max=1) / v.shape[0]
    assert torch.allclose(hist, torch.full_like(hist, 1 / 8), atol=0.01)


def test_unknown_distribution_lists_known():
    with pytest.raises(KeyError, match="Sinusoid"):
        envs.make_distribution("no-such-task")


def test_env_passes_check_env_and_rewards_squared_error():
    env = gym.make("metarl/Sinusoid-v0")
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=0, options={"task": {"amplitude": 2.0, "phase": 0.5}})
    y = 2.0 * np.sin(obs[0] - 0.5)
    _, reward, terminated, truncated, _ = env.step(np.array([y + 0.3], dtype=np.float32))
    assert terminated and not truncated
    assert reward == pytest.approx(-0.09, abs=1e-5)
