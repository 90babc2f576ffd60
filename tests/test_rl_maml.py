"""MAML-RL: the meta-gradient through the inner step against finite differences (float64), the TRPO step's
KL bound, the importance ratio before the first update, first-order vs second-order, reproducibility."""
import math

import pytest
import torch
from torch.func import grad

from envs.navigation import BatchedNavigation2D, Navigation2DTasks
from metarl.models import parameters_of
from metarl.rl.advantages import process_rollouts
from metarl.rl.maml_rl import LOG_LR_PREFIX, MAMLRL, adapt_per_task
from metarl.rl.policy import GaussianMLPPolicy, batched_policy_outputs, expand_params, gaussian_log_prob
from metarl.rl.reptile_rl import ReptileRL
from metarl.rl.sampler import BatchedSampler
from metarl.rl.trpo import TRPOSettings, conjugate_gradient, trpo_step


def tiny_case(estimator="reinforce", first_order=False):
    """One task, 2 episodes x 3 steps of fixed data, a 2-3-2 tanh policy, float64."""
    gen = torch.Generator().manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden=(3,), activation="tanh", init_std=0.7, generator=gen).double()
    theta = parameters_of(policy)
    algo = MAMLRL(policy, theta, inner_lr=0.5, estimator=estimator, first_order=first_order)

    def data():
        return {
            "obs": torch.randn(1, 2, 3, 2, generator=gen, dtype=torch.float64),
            "actions": torch.randn(1, 2, 3, 2, generator=gen, dtype=torch.float64),
            "advantages": torch.randn(1, 2, 3, generator=gen, dtype=torch.float64),
            "mask": torch.tensor([[[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]], dtype=torch.float64),
        }

    support, query = data(), data()
    query = algo.with_old_policy(theta, support, query)
    # move theta away from the sampling point so the surrogate's ratio and the KL are not trivially flat
    theta = {k: v + 0.1 * torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in theta.items()}
    return algo, theta, support, query


def finite_difference(f, theta, eps=1e-6):
    out = {}
    for k, v in theta.items():
        g = torch.zeros_like(v)
        for i in range(v.numel()):
            d = torch.zeros_like(v).view(-1)
            d[i] = eps
            d = d.view_as(v)
            plus = float(f({**theta, k: v + d}))
            minus = float(f({**theta, k: v - d}))
            g.view(-1)[i] = (plus - minus) / (2 * eps)
        out[k] = g
    return out


def test_meta_gradient_matches_finite_differences():
    algo, theta, support, query = tiny_case("reinforce")
    th = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    loss, kl, _ = algo.loss_and_kl(th, support, query)
    grads = torch.autograd.grad(loss, list(th.values()))
    fd = finite_difference(lambda t: algo.loss_and_kl(t, support, query)[0], theta)
    for (k, g_fd), g in zip(fd.items(), grads):
        assert torch.allclose(g, g_fd, atol=1e-7, rtol=1e-5), k


@pytest.mark.parametrize("estimator", ["reinforce", "dice", "lvc"])
def test_meta_gradient_uses_the_estimators_hessian(estimator):
    """d L_out(theta - a g(theta)) / d theta = (I - a H) grad L_out(phi), with g and H the estimator's gradient
    and Hessian (DiCE and LVC are not the derivative of the sampled loss: FD only applies to REINFORCE)."""
    algo, theta, support, query = tiny_case(estimator)
    names, shapes = list(theta), [v.shape for v in theta.values()]
    sizes = [v.numel() for v in theta.values()]

    def unflat(x):
        return {n: c.view(s) for n, c, s in zip(names, x.split(sizes), shapes)}

    one_s = {k: v[0] for k, v in support.items()}
    one_q = {k: v[0] for k, v in query.items()}
    x = torch.cat([v.reshape(-1) for v in theta.values()])
    inner = lambda x: algo.objective.inner_loss(unflat(x), one_s)  # noqa: E731
    g = torch.autograd.functional.jacobian(inner, x)
    H = torch.autograd.functional.hessian(inner, x)
    phi = x - algo.inner_lr * g
    g_out = torch.autograd.functional.jacobian(lambda p: algo.objective.outer_loss(unflat(p), one_q)[0], phi)
    expected = g_out - algo.inner_lr * H @ g_out
    th = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    got = torch.cat([t.reshape(-1) for t in torch.autograd.grad(algo.loss_and_kl(th, support, query)[0], list(th.values()))])
    assert torch.allclose(got, expected, atol=1e-10, rtol=1e-8)


def test_kl_hessian_vector_product_through_adaptation_matches_finite_differences():
    algo, theta, support, query = tiny_case()
    gen = torch.Generator().manual_seed(3)
    v = {k: torch.randn(t.shape, generator=gen, dtype=torch.float64) for k, t in theta.items()}

    def kl_grad(t, create_graph=False):
        tt = {k: x.clone().requires_grad_(True) for k, x in t.items()}
        kl = algo.loss_and_kl(tt, support, query)[1]
        return dict(zip(tt, torch.autograd.grad(kl, list(tt.values()), create_graph=create_graph))), tt

    g, tt = kl_grad(theta, create_graph=True)
    hv = torch.autograd.grad(sum((g[k] * v[k]).sum() for k in g), list(tt.values()))
    eps = 1e-5
    gp, _ = kl_grad({k: theta[k] + eps * v[k] for k in theta})
    gm, _ = kl_grad({k: theta[k] - eps * v[k] for k in theta})
    for (k, h) in zip(theta, hv):
        assert torch.allclose(h, (gp[k] - gm[k]) / (2 * eps), atol=1e-7, rtol=1e-5), k


def test_first_order_meta_gradient_differs_from_second_order():
    grads = []
    for fo in (False, True):
        algo, theta, support, query = tiny_case(first_order=fo)
        th = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
        grads.append(torch.autograd.grad(algo.loss_and_kl(th, support, query)[0], list(th.values())))
    assert not all(torch.allclose(a, b) for a, b in zip(*grads))


def nav_setup(seed=0, T=4, E=6, H=20, **kw):
    gen = torch.Generator().manual_seed(seed)
    policy = GaussianMLPPolicy(2, 2, hidden=(16, 16), generator=gen)
    algo = MAMLRL(policy, parameters_of(policy), inner_lr=0.1, **kw)
    sampler = BatchedSampler(BatchedNavigation2D(T, E, H), policy)
    tasks = Navigation2DTasks().sample(T, gen)
    last = {}

    def collect(params):
        r = sampler.collect(params, tasks, gen)
        last["rollouts"] = r
        return process_rollouts(r), float(r.episode_returns.mean())

    return algo, collect, T, last


def test_importance_ratio_is_exactly_one_before_the_first_update():
    algo, collect, T, last = nav_setup()
    theta = algo.init_params()
    support, _ = collect(theta)
    phi = adapt_per_task(algo.objective, expand_params(theta, T), support, algo.inner_lr)
    query, _ = collect(phi)
    q = algo.with_old_policy(theta, support, query)
    # the old log-probs are those of the policy that sampled the query episodes
    assert torch.allclose(q["old_log_probs"], last["rollouts"].log_probs, atol=1e-4)
    th = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    _, kl, metrics = algo.loss_and_kl(th, support, q)
    assert float(metrics["ratio_dev"].detach()) == 0.0 and float(kl.detach()) == 0.0


@pytest.mark.parametrize("max_kl", [0.01, 1e-4])
def test_trpo_step_respects_the_kl_bound_and_improves(max_kl):
    algo, collect, T, _ = nav_setup(trpo=TRPOSettings(max_kl=max_kl))
    theta = algo.init_params()
    support, _ = collect(theta)
    query, _ = collect(adapt_per_task(algo.objective, expand_params(theta, T), support, algo.inner_lr))
    q = algo.with_old_policy(theta, support, query)
    new, info = trpo_step(theta, lambda t: algo.loss_and_kl(t, support, q), algo.trpo)
    assert info["accepted"] == 1.0
    loss_old, _, _ = algo.loss_and_kl(theta, support, q)
    loss_new, kl_new, _ = algo.loss_and_kl(new, support, q)
    assert float(kl_new) <= max_kl and float(kl_new) > 0.1 * max_kl  # uses the trust region, stays inside
    assert float(loss_new) < float(loss_old)


def test_conjugate_gradient_solves_spd_system():
    gen = torch.Generator().manual_seed(0)
    M = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    A = M @ M.T + 6 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=gen, dtype=torch.float64)
    x = conjugate_gradient(lambda v: A @ v, b, iters=20)
    assert torch.allclose(A @ x, b, atol=1e-8)


@pytest.mark.parametrize("outer", ["trpo", "ppo"])
def test_same_seed_same_returns(outer):
    runs = []
    for _ in range(2):
        algo, collect, T, _ = nav_setup(seed=7, outer=outer)
        theta = algo.init_params()
        history = []
        for _ in range(2):
            theta, m = algo.iteration(theta, T, collect)
            history.append((m["return_pre"], m["return_post"]))
        runs.append((history, theta))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])
    assert runs[0][0][0] != runs[0][0][1]  # the params did move


def test_ppo_outer_step_lowers_the_surrogate():
    algo, collect, T, _ = nav_setup(outer="ppo", ppo_lr=1e-3)
    theta = algo.init_params()
    support, _ = collect(theta)
    query, _ = collect(adapt_per_task(algo.objective, expand_params(theta, T), support, algo.inner_lr))
    new, info = algo.outer_step(theta, support, query)
    q = algo.with_old_policy(theta, support, query)
    assert float(algo.loss_and_kl(new, support, q)[0]) < float(algo.loss_and_kl(theta, support, q)[0])


def test_reptile_rl_moves_theta_towards_the_adapted_params():
    algo, collect, T, _ = nav_setup()
    rep = ReptileRL(algo.objective.policy, algo.init_params(), inner_lr=0.1, inner_steps=2, epsilon=1.0)
    theta = rep.init_params()
    # epsilon = 1: theta becomes the mean of the adapted parameters, replayed here with the same generator
    algo2, collect2, _, _ = nav_setup()
    phi = expand_params(theta, T)
    for step in range(2):
        data, _ = collect2(theta if step == 0 else phi)
        phi = adapt_per_task(rep.objective, phi, data, 0.1)
    new, m = rep.iteration(theta, T, collect)
    assert all(torch.allclose(new[k], phi[k].mean(0)) for k in new)
    assert not torch.allclose(new["mean.4.bias"], theta["mean.4.bias"])


@pytest.mark.parametrize("first_order", [False, True])
def test_gauss_newton_kl_hvp_equals_autograd_hvp_at_the_old_params(first_order):
    algo, theta, support, query = tiny_case(first_order=first_order)
    # at the params that sampled the query data the KL's gradient in phi vanishes: there H = J^T F J exactly
    q = algo.with_old_policy(theta, support, query)
    gen = torch.Generator().manual_seed(4)
    v = {k: torch.randn(t.shape, generator=gen, dtype=torch.float64) for k, t in theta.items()}
    th = {k: t.clone().requires_grad_(True) for k, t in theta.items()}
    kl = algo.loss_and_kl(th, support, q)[1]
    g = torch.autograd.grad(kl, list(th.values()), create_graph=True)
    hv = torch.autograd.grad(sum((a * v[k]).sum() for a, k in zip(g, th)), list(th.values()))
    gn = algo.kl_hvp_gauss_newton(theta, support, q, v)
    for k, h in zip(th, hv):
        assert torch.allclose(gn[k], h, atol=1e-10, rtol=1e-8), k


def multi_step_case(weights=(), first_order=False, learn_inner_lr=False):
    """tiny_case with two inner steps: supports D_0, D_1 and queries D_1, D_2 (the old policies attached)."""
    gen = torch.Generator().manual_seed(1)
    policy = GaussianMLPPolicy(2, 2, hidden=(3,), activation="tanh", init_std=0.7, generator=gen).double()
    algo = MAMLRL(policy, parameters_of(policy), inner_lr=0.5, first_order=first_order, inner_steps=2,
                  step_loss_weights=weights, learn_inner_lr=learn_inner_lr)
    theta = algo.init_params()

    def data():
        return {
            "obs": torch.randn(1, 2, 3, 2, generator=gen, dtype=torch.float64),
            "actions": torch.randn(1, 2, 3, 2, generator=gen, dtype=torch.float64),
            "advantages": torch.randn(1, 2, 3, generator=gen, dtype=torch.float64),
            "mask": torch.tensor([[[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]], dtype=torch.float64),
        }

    d0, d1, d2 = data(), data(), data()
    support, query = [d0, d1], algo.with_old_policy(theta, [d0, d1], [d1, d2])
    theta = {k: v + 0.1 * torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in theta.items()}
    return algo, theta, support, query


def two_steps_by_hand(algo, theta, support, query, lr0, lr1):
    """Task 0's phi_2 (phi_1 = theta - lr0 grad on D_0, phi_2 = phi_1 - lr1 grad on D_1) and its surrogate and
    metrics on the query D_2."""
    one = lambda d: {k: v[0] for k, v in d.items()}  # noqa: E731
    inner = algo.objective.inner_loss
    g0 = grad(inner)(theta, one(support[0]))
    phi1 = {k: theta[k] - lr0 * g0[k] for k in theta}
    g1 = grad(inner)(phi1, one(support[1]))
    phi2 = {k: phi1[k] - lr1 * g1[k] for k in theta}
    return (phi2, *algo.objective.outer_loss(phi2, one(query[1])))


def test_two_inner_steps_take_the_second_step_on_the_second_data_from_the_first_steps_params():
    algo, theta, support, query = multi_step_case()
    phi2, expected, metrics = two_steps_by_hand(algo, theta, support, query, 0.5, 0.5)
    loss, kl, _ = algo.loss_and_kl(theta, support, query)
    assert torch.allclose(loss, expected, atol=1e-12) and torch.allclose(kl, metrics["kl"], atol=1e-12)
    # the adapted params of the path are those that sampled each query (the old policy's log-probs)
    path = algo.adapt_path(theta, support)
    assert all(torch.allclose(path[1][k][0], phi2[k], atol=1e-12) for k in theta)


@pytest.mark.parametrize("weights", [(), (0.5, 0.5)])
def test_two_step_meta_gradient_matches_finite_differences(weights):
    algo, theta, support, query = multi_step_case(weights)
    th = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    grads = torch.autograd.grad(algo.loss_and_kl(th, support, query)[0], list(th.values()))
    fd = finite_difference(lambda t: algo.loss_and_kl(t, support, query)[0], theta)
    for (k, g_fd), g in zip(fd.items(), grads):
        assert torch.allclose(g, g_fd, atol=1e-7, rtol=1e-5), k


def test_step_loss_weights_mix_the_steps_surrogates():
    (a_first, theta, s, q), (a_last, _, _, _), (a_mix, _, _, _) = (multi_step_case(w) for w in [(1, 0), (0, 1), (1, 3)])
    l1, l2, lm = (a.loss_and_kl(theta, s, q)[0] for a in (a_first, a_last, a_mix))
    assert not torch.allclose(l1, l2)
    assert torch.allclose(lm, 0.25 * l1 + 0.75 * l2, atol=1e-12)
    with pytest.raises(ValueError, match="step_loss_weights"):
        multi_step_case((1.0,))


def test_multi_step_iteration_collects_once_per_step_and_is_reproducible():
    runs = []
    for _ in range(2):
        algo, collect, T, last = nav_setup(seed=3, inner_steps=3)
        calls = []
        counted = lambda p: (calls.append(p), collect(p))[1]  # noqa: E731
        theta, m = algo.iteration(algo.init_params(), T, counted)
        assert len(calls) == 4 and {"return_step1", "return_step2", "return_post"} <= set(m)
        assert m["accepted"] == 1.0
        runs.append(theta)
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_learned_inner_lr_starts_at_inner_lr_and_its_meta_gradient_matches_finite_differences():
    fixed, theta_f, support, query = multi_step_case()
    learned = MAMLRL(fixed.policy, fixed.init_params(), inner_lr=0.5, inner_steps=2, learn_inner_lr=True)
    init = learned.init_params()
    lr_keys = [k for k in init if k.startswith(LOG_LR_PREFIX)]
    assert sorted(lr_keys) == sorted(LOG_LR_PREFIX + k for k in theta_f)
    assert all(torch.allclose(init[k], torch.full_like(init[k], math.log(0.5))) for k in lr_keys)
    # at the initial step sizes Meta-SGD is MAML with inner_lr
    same = {**init, **theta_f}
    assert torch.allclose(learned.loss_and_kl(same, support, query)[0], fixed.loss_and_kl(theta_f, support, query)[0])
    gen = torch.Generator().manual_seed(5)
    theta = {k: v + 0.05 * torch.randn(v.shape, generator=gen, dtype=v.dtype) if k in lr_keys else v
             for k, v in same.items()}
    th = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    grads = dict(zip(th, torch.autograd.grad(learned.loss_and_kl(th, support, query)[0], list(th.values()))))
    fd = finite_difference(lambda t: learned.loss_and_kl(t, support, query)[0], theta)
    for k in theta:
        assert torch.allclose(grads[k], fd[k], atol=1e-7, rtol=1e-5), k
    assert all(float(grads[k].abs().max()) > 0 for k in lr_keys)
    # the adaptation uses exp(log step size) per entry
    policy_params, lr = learned.adaptation(theta)
    assert set(policy_params) == set(theta_f)
    assert torch.allclose(lr["log_std"], theta[LOG_LR_PREFIX + "log_std"].exp())


def test_step_lr_scales_shorten_the_later_steps_in_training_and_repeat_the_last():
    algo, theta, support, query = multi_step_case()
    scaled = MAMLRL(algo.policy, algo.init_params(), inner_lr=0.5, inner_steps=2, step_lr_scales=(1.0, 0.2))
    assert scaled.step_size(0.5, 0) == 0.5 and scaled.step_size(0.5, 1) == pytest.approx(0.1)
    assert scaled.step_size(0.5, 5) == pytest.approx(0.1)  # evaluation beyond the trained steps: the last scale
    _, expected, _ = two_steps_by_hand(algo, theta, support, query, 0.5, 0.1)
    assert torch.allclose(scaled.loss_and_kl(theta, support, query)[0], expected, atol=1e-12)
    assert not torch.allclose(algo.loss_and_kl(theta, support, query)[0], expected)
    with pytest.raises(ValueError, match="step_lr_scales"):
        MAMLRL(algo.policy, algo.init_params(), step_lr_scales=(1.0, 0.0))
