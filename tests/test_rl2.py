"""RL² (learner.algo rl2): the GRU policy's hidden state carries across the episodes of a trial and starts from
zero in every trial; the loss re-runs exactly the recurrence the sampler ran; the PPO gradient against finite
differences (float64); returns and advantages flow across episode boundaries; configs and an end-to-end run."""
import json

import pytest
import torch

import envs
from envs.navigation import BatchedNavigation2D, Navigation2DTasks
from metarl.algorithms.rl2 import RL2
from metarl.nets import parameters_of
from metarl.nets.policies import GRUGaussianPolicy
from metarl.rl.advantages import discounted_returns, gae
from metarl.rl.objective import PolicyGradientObjective
from metarl.rl.sampler import BatchedSampler


def setup(dtype=torch.float32, tasks=2, trials=3, horizon=6, seed=0):
    policy = GRUGaussianPolicy(2, 2, hidden=8, generator=torch.Generator().manual_seed(seed)).to(dtype)
    env = BatchedNavigation2D(tasks, trials, horizon, dtype=dtype)
    sampler = BatchedSampler(env, policy)
    goals = Navigation2DTasks().sample(tasks, torch.Generator().manual_seed(1))
    return policy, sampler, goals


def test_loss_reruns_the_samplers_recurrence_and_the_state_carries_across_episodes_only():
    policy, sampler, goals = setup()
    params = parameters_of(policy)
    trials = sampler.collect(params, goals, torch.Generator().manual_seed(2), episodes=3)
    H = 6
    assert trials.inputs.shape == (2, 3, 18, 2 + 2 + 2)
    # the loss's unroll over the kept inputs gives the sampling log-probs
    mean, log_std = policy.unroll(params, trials.inputs, trials.mask)
    from metarl.nets.policies import gaussian_log_prob

    torch.testing.assert_close(gaussian_log_prob(mean, log_std, trials.actions), trials.log_probs, rtol=1e-4, atol=1e-4)
    # each episode starts with the first-step flag, the previous step's action and reward
    first = trials.inputs[..., -1]
    assert torch.equal(first[..., ::H], torch.ones_like(first[..., ::H])) and first.sum() == 2 * 3 * 3
    torch.testing.assert_close(trials.inputs[:, :, H, 4], trials.rewards[:, :, H - 1])
    torch.testing.assert_close(trials.inputs[:, :, H, 2:4], trials.actions[:, :, H - 1])
    assert trials.inputs[:, :, 0, 2:5].abs().max() == 0  # nothing remembered at a trial's start
    # carried: episode 2's outputs depend on what episode 1 saw, and differ from a fresh state's
    altered = trials.inputs.clone()
    altered[:, :, 1:H, 4] += 1.0  # other rewards seen during episode 1
    mean_altered, _ = policy.unroll(params, altered, trials.mask)
    assert torch.allclose(mean_altered[:, :, :1], mean[:, :, :1])
    assert (mean_altered[:, :, H:] - mean[:, :, H:]).abs().max() > 1e-4
    fresh, _ = policy.unroll(params, trials.inputs[:, :, H:], trials.mask[:, :, H:])
    assert (fresh - mean[:, :, H:]).abs().max() > 1e-4
    # reset between trials: a second collection with the same generator seed is the same trial again
    again = sampler.collect(params, goals, torch.Generator().manual_seed(2), episodes=3)
    assert torch.equal(again.actions, trials.actions) and torch.equal(again.inputs, trials.inputs)


def test_masked_steps_keep_the_state_and_returns_flow_across_episodes():
    policy, _, _ = setup()
    params = parameters_of(policy)
    x = torch.randn(1, 4, policy.input_dim, generator=torch.Generator().manual_seed(0))
    gap = torch.tensor([[1.0, 0.0, 0.0, 1.0]])  # an episode ended after step 0; the next starts at step 3
    m1, _ = policy.unroll(params, x, gap)
    m2, _ = policy.unroll(params, x[:, [0, 3]], torch.ones(1, 2))  # the same trial without the padding
    torch.testing.assert_close(m1[:, [0, 3]], m2)
    rewards = torch.tensor([[1.0, 0.0, 0.0, 2.0]])
    carried = discounted_returns(rewards, gap, 0.5, carry=True)
    torch.testing.assert_close(carried, torch.tensor([[1.0 + 0.5 * 2.0, 0.0, 0.0, 2.0]]))
    assert discounted_returns(rewards, gap, 0.5)[0, 0] == 1.0  # the episodic form cuts at the gap
    values = torch.tensor([[0.5, 9.0, 9.0, 1.0]])  # values on masked steps are ignored
    adv = gae(rewards, values, gap, 0.5, 1.0, carry=True)
    torch.testing.assert_close(adv, torch.tensor([[1.0 + 0.5 * 2.0 - 0.5, 0.0, 0.0, 1.0]]))


def test_ppo_gradient_matches_finite_differences():
    torch.manual_seed(0)  # unused: every draw below has its own generator
    policy, sampler, goals = setup(dtype=torch.float64, horizon=4)
    learner = RL2(PolicyGradientObjective(policy, clip=0.2), parameters_of(policy))
    meta = learner.init_meta_params()
    trials = sampler.collect(meta["theta"], goals, torch.Generator().manual_seed(3), episodes=2)
    g = torch.Generator().manual_seed(4)
    data = {"inputs": trials.inputs, "actions": trials.actions, "mask": trials.mask,
            "advantages": torch.randn(trials.mask.shape, generator=g, dtype=torch.float64),
            "old_log_probs": trials.log_probs + 0.05 * torch.randn(trials.mask.shape, generator=g, dtype=torch.float64)}
    grads, loss, metrics = learner.meta_gradient(meta, [data], [])
    assert float(metrics["kl"]) > 0
    eps = 1e-6
    for name in ("gru.weight_hh", "head.weight", "log_std"):
        direction = torch.randn(meta["theta"][name].shape, generator=g, dtype=torch.float64)
        shifted = lambda s: {"theta": {**meta["theta"], name: meta["theta"][name] + s * eps * direction}}  # noqa: E731
        fd = (learner.meta_loss(shifted(1), [data], [])[0] - learner.meta_loss(shifted(-1), [data], [])[0]) / (2 * eps)
        torch.testing.assert_close((grads["theta"][name] * direction).sum(), fd, rtol=1e-5, atol=1e-9)


def test_config_checks_rl2():
    from metarl.run.config import Config, from_dict
    from metarl.core.errors import ConfigError

    base = {"task": {"name": "Navigation2D"}, "learner": {"algo": "rl2"}, "model": {"hidden": [16]},
            "outer": {"optimizer": "ppo"}}
    from_dict(Config, base).validate()
    for change, message in [
        ({"outer": {"optimizer": "trpo"}}, "trains with outer.optimizer ppo"),
        ({"model": {"hidden": [16, 16]}}, "one value"),
        ({"task": {"name": "Sinusoid"}, "model": {"hidden": [16]}}, "learns rl task families"),
        ({"learner": {"algo": "rl2", "inner_lr": 0.3}}, "learner.inner_lr is not used with learner.algo rl2"),
        ({"rl": {"trial_episodes": 0}}, "trial_episodes"),
    ]:
        from metarl.run.config import merge_dicts

        with pytest.raises(ConfigError, match=message):
            from_dict(Config, merge_dicts(base, change)).validate()
    with pytest.raises(ConfigError, match="rl.trial_episodes is not used with learner.algo maml"):
        from_dict(Config, {"task": {"name": "Navigation2D"}, "rl": {"trial_episodes": 3}}).validate()


def test_rl2_trains_and_evaluates_in_context_through_the_trainer(tmp_path):
    from metarl.run.config import Config, from_dict
    from metarl.run.trainer import Trainer

    cfg = from_dict(Config, {
        "task": {"name": "Navigation2D", "horizon": 10}, "model": {"hidden": [8], "action_scale": 0.1},
        "learner": {"algo": "rl2"}, "outer": {"optimizer": "ppo", "epochs": 2},
        "rl": {"episodes_per_task": 2, "trial_episodes": 2},
        "train": {"iterations": 2, "meta_batch_size": 3, "eval_every": 0, "threads": 1},
        "eval": {"num_tasks": 4, "episodes_per_task": 2, "steps": 2, "plot_tasks": 2},
        "log": {"wandb": "disabled", "progress": False, "console": False}, "device": "cpu",
        "run_dir": str(tmp_path / "rl2")}).validate()
    result = Trainer(cfg).run()
    summary = json.loads((tmp_path / "rl2" / "eval.json").read_text())
    assert summary["steps"] == [0, 1, 2] and len(summary["return"]["mean"]) == 3
    assert summary["protocol"]["adaptation"].startswith("in context")
    assert result["iterations"] == 2 and (tmp_path / "rl2" / "eval.png").is_file()
    assert envs.family("Navigation2D").is_rl


def test_ppo_minibatches_split_every_task_once_in_a_seeded_order():
    from metarl.algorithms.base import Batch
    from metarl.core.numerics import FlatAdam
    from metarl.outer.gradient import GradientStep

    step = GradientStep(FlatAdam(torch.zeros(3)), lambda it: 1e-3, epochs=2, minibatches=3)
    batch = Batch({"goal": torch.arange(7.0)[:, None]}, [{"x": torch.arange(7.0)}], [])
    parts = [p for p, _ in step._parts(batch, iteration=5, epoch=0)]
    assert len(parts) == 3 and sorted(torch.cat([p.support[0]["x"] for p in parts]).tolist()) == list(range(7))
    again = [p for p, _ in step._parts(batch, iteration=5, epoch=0)]
    assert all(torch.equal(a.support[0]["x"], b.support[0]["x"]) for a, b in zip(parts, again))
    other = [p for p, _ in step._parts(batch, iteration=5, epoch=1)]
    assert any(not torch.equal(a.support[0]["x"], b.support[0]["x"]) for a, b in zip(parts, other))
    # split over ranks (tasks 0..2 and 3..6), each rank's parts are its members of the same groups, weighted
    # by their share of the group
    for first, n in ((0, 3), (3, 4)):
        mine = Batch({"goal": torch.arange(7.0)[first:first + n, None]}, [{"x": torch.arange(7.0)[first:first + n]}],
                     [], first=first, total=7)
        for whole, (part, share) in zip(parts, step._parts(mine, iteration=5, epoch=0)):
            members = [x for x in whole.support[0]["x"].tolist() if first <= x < first + n]
            assert share == len(members) / len(whole.support[0]["x"])
            assert part.support[0]["x"].tolist() == (members or [float(first)])  # none: any task, weight 0
    with pytest.raises(ValueError, match="more than the 7 tasks"):
        GradientStep(FlatAdam(torch.zeros(3)), lambda it: 1e-3, minibatches=8)._parts(batch, 0, 0)
