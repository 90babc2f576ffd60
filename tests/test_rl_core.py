"""RL building blocks: sampler masks and per-task parameters, returns, GAE, the linear baseline, estimators."""
import pytest
import torch
from torch.func import grad

from envs.navigation import BatchedNavigation2D
from metarl.nets import parameters_of
from metarl.rl.advantages import discounted_returns, fit_linear_baseline, gae, normalize_per_task, baseline_features
from metarl.rl.estimators import get_estimator
from metarl.nets.policies import GaussianMLPPolicy, gaussian_kl, gaussian_log_prob
from metarl.rl.sampler import BatchedSampler


def constant_action_params(policy, actions):
    """Per-task params whose mean action is the constant actions[i] (zero weights, last bias)."""
    p = parameters_of(policy)
    out = {k: torch.zeros(len(actions), *v.shape) for k, v in p.items()}
    out["mean.4.bias"] = torch.tensor(actions)
    out["log_std"] = torch.full((len(actions), 2), -20.0)
    return out


def test_sampler_masks_termination_and_uses_per_task_params():
    policy = GaussianMLPPolicy(2, 2, hidden=(4, 4))
    env = BatchedNavigation2D(2, 3, horizon=8)
    tasks = {"goal": torch.tensor([[0.3, 0.3], [-0.2, 0.0]])}
    params = constant_action_params(policy, [[0.1, 0.1], [0.0, 0.05]])
    r = BatchedSampler(env, policy).collect(params, tasks, torch.Generator().manual_seed(0), deterministic=True)
    assert r.obs.shape == (2, 3, 8, 2) and r.rewards.shape == (2, 3, 8)
    # task 0 reaches its goal on the 3rd step: mask 1 up to and including that step, rewards 0 afterwards
    assert r.mask[0, 0].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert torch.all(r.rewards[0, :, 3:] == 0) and torch.all(r.rewards[0, :, :2] < 0)
    assert torch.allclose(r.rewards[0, 0, :3], torch.tensor([-0.2 * 2**0.5, -0.1 * 2**0.5, 0.0]), atol=1e-6)
    # task 1 moves along +y, away from its goal, never terminates
    assert torch.all(r.mask[1] == 1)
    assert torch.allclose(r.obs[1, 0, -1], torch.tensor([0.0, 0.35]))
    assert torch.allclose(r.episode_returns[0], r.rewards[0].sum(-1))
    assert r.episode_lengths()[..., 0].tolist() == [[3, 3, 3], [8, 8, 8]]  # what the trainer logs


def test_sampler_same_generator_seed_same_rollouts():
    policy = GaussianMLPPolicy(2, 2, hidden=(8,), generator=torch.Generator().manual_seed(0))
    params = {k: v.expand(2, *v.shape) for k, v in parameters_of(policy).items()}
    env = BatchedNavigation2D(2, 4, horizon=10)
    tasks = {"goal": torch.tensor([[0.3, 0.3], [-0.2, 0.0]])}
    s = BatchedSampler(env, policy)
    a = s.collect(params, tasks, torch.Generator().manual_seed(5))
    b = s.collect(params, tasks, torch.Generator().manual_seed(5))
    c = s.collect(params, tasks, torch.Generator().manual_seed(6))
    assert torch.equal(a.actions, b.actions) and torch.equal(a.rewards, b.rewards)
    assert not torch.equal(a.actions, c.actions)
    mean, log_std = policy(a.obs)
    assert torch.allclose(gaussian_log_prob(mean, log_std, a.actions), a.log_probs, atol=1e-5)


def test_shared_params_give_the_same_rollouts_as_per_task_copies():
    policy = GaussianMLPPolicy(2, 2, hidden=(8,), generator=torch.Generator().manual_seed(0))
    shared = parameters_of(policy)
    per_task = {k: v.expand(3, *v.shape) for k, v in shared.items()}
    s = BatchedSampler(BatchedNavigation2D(3, 2, horizon=12), policy)
    tasks = {"goal": torch.tensor([[0.3, 0.3], [-0.2, 0.0], [0.1, -0.4]])}
    a = s.collect(shared, tasks, torch.Generator().manual_seed(1))
    b = s.collect(per_task, tasks, torch.Generator().manual_seed(1))
    assert torch.allclose(a.obs, b.obs, atol=1e-6) and torch.allclose(a.log_probs, b.log_probs, atol=1e-5)


def test_discounted_returns_and_gae_by_hand():
    r = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # terminated after the third step
    v = torch.tensor([[0.5, 1.0, 2.0, 0.0]])
    g, lam = 0.9, 0.8
    ret = discounted_returns(r, m, g)
    assert torch.allclose(ret, torch.tensor([[1 + 0.9 * 2 + 0.81 * 3, 2 + 0.9 * 3, 3.0, 0.0]]))
    d2 = 3 - 2.0
    d1 = 2 + g * 2.0 - 1.0
    d0 = 1 + g * 1.0 - 0.5
    a2 = d2
    a1 = d1 + g * lam * a2
    a0 = d0 + g * lam * a1
    assert torch.allclose(gae(r, v, m, g, lam), torch.tensor([[a0, a1, a2, 0.0]]))
    # lambda = 1 with a zero baseline: the advantage is the discounted return
    assert torch.allclose(gae(r, torch.zeros_like(v), m, g, 1.0), ret)


def test_linear_baseline_recovers_linear_returns_per_task():
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(3, 4, 6, 2, generator=gen, dtype=torch.float64)
    feats = baseline_features(obs)
    w = torch.randn(3, feats.shape[-1], generator=gen, dtype=torch.float64)
    returns = torch.einsum("tehf,tf->teh", feats, w)
    mask = torch.ones(3, 4, 6, dtype=torch.float64)
    mask[0, 1, 4:] = 0
    fitted = fit_linear_baseline(obs, returns * mask, mask, reg=1e-10)
    assert torch.allclose(fitted, returns * mask, atol=1e-6)


def test_normalize_per_task():
    x = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 10.0]).view(2, 1, 1)
    m = torch.ones(2, 3, 5)
    y = normalize_per_task(x, m)
    assert torch.allclose(y.mean((1, 2)), torch.zeros(2), atol=1e-5)
    assert torch.allclose(y.pow(2).mean((1, 2)), torch.ones(2), atol=1e-4)


def _estimator_case():
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    obs = torch.randn(2, 5, 2, generator=gen, dtype=torch.float64)
    actions = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64)
    adv = torch.randn(2, 5, generator=gen, dtype=torch.float64)
    mask = torch.ones(2, 5, dtype=torch.float64)
    mask[1, 3:] = 0

    def loss_fn(name):
        def f(w):
            mean = obs @ w
            logp = gaussian_log_prob(mean, torch.zeros_like(mean), actions)
            return get_estimator(name)(logp, adv, mask)

        return f

    return w, loss_fn


def test_estimators_share_the_gradient_and_differ_in_curvature():
    w, loss_fn = _estimator_case()
    grads = {n: grad(loss_fn(n))(w) for n in ("reinforce", "dice", "lvc")}
    assert torch.allclose(grads["dice"], grads["reinforce"], atol=1e-12)
    assert torch.allclose(grads["lvc"], grads["reinforce"], atol=1e-12)
    hess = {n: torch.autograd.functional.hessian(loss_fn(n), w) for n in ("reinforce", "dice", "lvc")}
    assert not torch.allclose(hess["dice"], hess["reinforce"])
    assert not torch.allclose(hess["lvc"], hess["reinforce"])
    assert not torch.allclose(hess["lvc"], hess["dice"])
    with pytest.raises(ValueError, match="reinforce"):
        get_estimator("nope")


def test_gaussian_kl_zero_on_equal_and_matches_closed_form():
    m, s = torch.tensor([[0.3, -1.0]]), torch.tensor([[0.1, -0.2]])
    assert torch.allclose(gaussian_kl(m, s, m, s), torch.zeros(1))
    # 1-D check: KL(N(0,1) || N(1, e^2)) = 1 + (1 + 1) / (2 e^2) - 0.5
    kl = gaussian_kl(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1))
    assert torch.allclose(kl, torch.tensor([1 + 2 / (2 * torch.e**2) - 0.5]))


def test_action_scale_scales_the_gaussian_and_the_output_layers_gradient_only():
    """action_scale s: same distributions as the unscaled policy with the output layer times s and log_std + log s;
    the log-likelihood's gradient is the same in the hidden layers and s times smaller in the output layer."""
    gen = torch.Generator().manual_seed(0)
    s = 0.1
    scaled = GaussianMLPPolicy(2, 2, hidden=(5,), init_std=0.8, generator=gen, action_scale=s).double()
    plain = GaussianMLPPolicy(2, 2, hidden=(5,), init_std=0.8).double()
    p_scaled = parameters_of(scaled)
    p_plain = {k: v.clone() for k, v in p_scaled.items()}
    p_plain["mean.2.weight"] = p_plain["mean.2.weight"] * s
    p_plain["mean.2.bias"] = p_plain["mean.2.bias"] * s
    p_plain["log_std"] = p_plain["log_std"] + torch.log(torch.tensor(s, dtype=torch.float64))
    obs = torch.randn(7, 2, generator=gen, dtype=torch.float64)
    actions = 0.1 * torch.randn(7, 2, generator=gen, dtype=torch.float64)
    m_s, ls_s = scaled.call(p_scaled, obs)
    m_p, ls_p = plain.call(p_plain, obs)
    assert torch.allclose(m_s, m_p) and torch.allclose(ls_s, ls_p)
    assert torch.allclose(ls_s.exp(), torch.full_like(ls_s, 0.8 * s))
    assert torch.allclose(scaled(obs)[0], m_s)

    def g(policy, params):
        return grad(lambda p: gaussian_log_prob(*policy.call(p, obs), actions).sum())(params)

    g_s, g_p = g(scaled, p_scaled), g(plain, p_plain)
    assert torch.allclose(g_s["mean.0.weight"], g_p["mean.0.weight"])
    assert torch.allclose(g_s["mean.2.bias"], s * g_p["mean.2.bias"])
    assert torch.allclose(g_s["log_std"], g_p["log_std"])
    with pytest.raises(ValueError, match="action_scale"):
        GaussianMLPPolicy(2, 2, action_scale=0.0)


def test_sampler_keeps_torch_to_one_thread_while_an_env_steps_on_its_own_threads():
    import gymnasium as gym
    import numpy as np

    from envs.batched import BatchedTaskEnv

    class ThreadedEnv(BatchedTaskEnv):  # stands in for MuJoCo on CPU threads; records torch's thread count
        steps_on_own_threads = True

        def __init__(self):
            box = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
            super().__init__(2, 2, 3, box, box)
            self.seen = []

        def set_tasks(self, tasks):
            self.tasks = tasks

        def _reset(self, seed):
            return torch.zeros(4, 2), {}

        def _step(self, actions):
            self.seen.append(torch.get_num_threads())
            done = torch.zeros(4, dtype=torch.bool)
            return actions.clone(), -actions.pow(2).sum(-1), done, done, {}

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        env = ThreadedEnv()
        policy = GaussianMLPPolicy(2, 2, hidden=(4,), generator=torch.Generator().manual_seed(0))
        r = BatchedSampler(env, policy).collect(parameters_of(policy), {"goal": torch.zeros(2, 2)},
                                                torch.Generator().manual_seed(0))
        assert env.seen == [1, 1, 1] and torch.get_num_threads() == 2
        assert r.rewards.shape == (2, 2, 3) and torch.all(r.mask == 1)
    finally:
        torch.set_num_threads(before)


def test_linear_baseline_solves_with_many_features_per_task():
    # Ant's 105-dim observations give 214 features: torch 2.13's batched LU solve fails there on CPU
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(2, 2, 10, 105, generator=gen)
    returns = torch.randn(2, 2, 10, generator=gen)
    fitted = fit_linear_baseline(obs, returns, torch.ones(2, 2, 10))
    assert torch.isfinite(fitted).all() and (fitted - returns).abs().max() < 1e-2  # 214 features fit 20 points
