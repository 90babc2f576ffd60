"""2D navigation: task split, single env (check_env), batched env, and their step-for-step agreement."""
import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs  # (registers the env ids)
from envs.base import checkerboard_split_of
from envs.navigation import BatchedNavigation2D, Navigation2DTasks


def test_goals_in_range_and_splits_disjoint():
    dist = Navigation2DTasks()
    for split in ("train", "test"):
        goals = dist.sample(500, torch.Generator().manual_seed(0), split)["goal"]
        assert goals.shape == (500, 2)
        assert goals.min() >= -0.5 and goals.max() < 0.5
        assert set(checkerboard_split_of(goals + 0.5)) == {split}


def test_same_seed_same_goals():
    dist = Navigation2DTasks()
    a = dist.sample(10, torch.Generator().manual_seed(3))["goal"]
    b = dist.sample(10, torch.Generator().manual_seed(3))["goal"]
    c = dist.sample(10, torch.Generator().manual_seed(4))["goal"]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_single_env_passes_check_env():
    env = gym.make("metarl/Navigation2D-v0")
    check_env(env.unwrapped)
    obs, _ = env.reset(seed=0)
    assert np.array_equal(obs, np.zeros(2, np.float32))
    steps = 0
    truncated = terminated = False
    while not (terminated or truncated):
        obs, r, terminated, truncated, _ = env.step(np.zeros(2, np.float32))
        steps += 1
    assert steps == 100 and truncated


def test_dynamics_clip_reward_and_termination():
    env = gym.make("metarl/Navigation2D-v0", task={"goal": (0.15, -0.05)})
    env.reset(seed=0)
    obs, r, term, _, _ = env.step(np.array([1.0, -0.05], np.float32))  # clipped to 0.1 on x
    assert np.allclose(obs, [0.1, -0.05]) and np.isclose(r, -0.05, atol=1e-6) and not term
    obs, r, term, _, _ = env.step(np.array([0.045, 0.0], np.float32))
    assert term and np.isclose(r, -0.005, atol=1e-6)


def test_single_and_batched_envs_agree_step_for_step():
    T, E, H = 3, 2, 100
    goals = Navigation2DTasks().sample(T, torch.Generator().manual_seed(1), "test")
    actions = 0.08 * torch.randn(H, T * E, 2, generator=torch.Generator().manual_seed(2))
    # steer a few episodes straight to their goal so termination is exercised
    batched = BatchedNavigation2D(T, E, H)
    obs, _ = batched.reset(options={"tasks": goals})
    b_obs, b_rew, b_term = [], [], []
    for t in range(H):
        if t < 10:
            actions[t, ::2] = (batched.goal[::2] - obs[::2]).clamp(-0.1, 0.1)
        obs, rew, term, trunc, _ = batched.step(actions[t])
        b_obs.append(obs), b_rew.append(rew), b_term.append(term)
    assert bool(trunc.all())
    assert bool(b_term[-1][::2].all()), "the steered episodes should have reached their goals"
    for i in range(T * E):
        env = gym.make("metarl/Navigation2D-v0")
        env.reset(seed=0, options={"task": {"goal": goals["goal"][i // E]}})
        done = False
        for t in range(H):
            if done:  # the batched env freezes a finished episode with reward 0
                assert b_rew[t][i] == 0 and bool(b_term[t][i])
                continue
            o, r, done, _, _ = env.step(actions[t, i].numpy())
            assert np.array_equal(o, b_obs[t][i].numpy()), (i, t)
            assert r == float(b_rew[t][i]) and done == bool(b_term[t][i]), (i, t)


def test_batched_env_errors_and_registry():
    fam = envs.family("navigation2d")
    assert fam.name == "Navigation2D" and envs.family("metarl/Navigation2D-v0") is fam and fam.is_rl
    assert fam.env_id == "metarl/Navigation2D-v0" and fam.env_id in gym.registry and fam.horizon == 100
    env = envs.make_batched_env("Navigation2D", 2, 3)
    assert env.num_envs == 6 and env.horizon == 100
    with pytest.raises(RuntimeError):
        env.reset()
    with pytest.raises(ValueError):
        env.set_tasks({"goal": torch.zeros(3, 2)})
    env.reset(options={"tasks": {"goal": torch.zeros(2, 2)}})
    with pytest.raises(ValueError):
        env.step(torch.zeros(5, 2))
    with pytest.raises(KeyError, match="Navigation2D"):
        envs.make_batched_env("Nope", 1, 1)
    with pytest.raises(KeyError, match="supervised"):
        envs.make_batched_env("Sinusoid", 1, 1)
