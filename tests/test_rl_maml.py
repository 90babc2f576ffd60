"""MAML-RL on the shared learner: the meta-gradient through one and two inner steps against finite differences
(float64), the estimators' Hessians, the TRPO step's KL bound, the importance ratio before the first update,
first order vs second order, Meta-SGD and fixed per-step sizes, Reptile-RL, reproducibility."""
import math

import pytest
import torch
from torch.func import grad

from envs.navigation import Navigation2DTasks
from metarl.algorithms.maml import MAML
from metarl.algorithms.reptile import Reptile
from metarl.nets import parameters_of
from metarl.algorithms.maml import GaussNewtonKL
from metarl.core.numerics import conjugate_gradient
from metarl.outer.gradient import GradientStep
from metarl.outer.problem import MetaProblem
from metarl.outer.trpo import TRPOStep
from metarl.core.numerics import FlatAdam
from metarl.core.params import FlatLayout
from metarl.rl.objective import PolicyGradientObjective
from metarl.nets.policies import GaussianMLPPolicy
from metarl.rl.source import RolloutSource, with_old_policy

import envs


def fixed_data(gen):
    return {
        "obs": torch.randn(1, 2, 3, 2, generator=gen, dtype=torch.float64),
        "actions": torch.randn(1, 2, 3, 2, generator=gen, dtype=torch.float64),
        "advantages": torch.randn(1, 2, 3, generator=gen, dtype=torch.float64),
        "mask": torch.tensor([[[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]], dtype=torch.float64),
        "rewards": torch.randn(1, 2, 3, generator=gen, dtype=torch.float64),
    }


def rl_case(steps=1, weights=(), first_order=False, estimator="reinforce", learn_inner_lr=False, scales=(), seed=0):
    """One task of fixed data, a 2-3-2 tanh policy, float64: supports D_0..D_{k-1}, queries D_1..D_k with the
    sampling (adapted) policies attached, then theta moved off the sampling point so that the surrogate's
    ratio and the KL are not trivially flat."""
    gen = torch.Generator().manual_seed(seed)
    policy = GaussianMLPPolicy(2, 2, hidden=(3,), activation="tanh", init_std=0.7, generator=gen).double()
    learner = MAML(PolicyGradientObjective(policy, estimator), parameters_of(policy), inner_lr=0.5, inner_steps=steps,
                   first_order=first_order, step_loss_weights=weights, learn_inner_lr=learn_inner_lr,
                   step_lr_scales=scales)
    meta = learner.init_meta_params()
    data = [fixed_data(gen) for _ in range(steps + 1)]
    support = data[:steps]
    path = learner.adapt_path(meta, support, steps)
    query = [with_old_policy(policy, d, p) for d, p in zip(data[1:], path[1:])]
    meta = {g: {k: v + 0.1 * torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in d.items()}
            for g, d in meta.items()}
    return learner, meta, support, query


def loss_and_kl(learner, meta, support, query):
    loss, metrics = learner.meta_loss(meta, support, query)
    return loss, metrics["kl"]


def finite_difference(f, meta, eps=1e-6):
    out = {}
    for g, d in meta.items():
        for k, v in d.items():
            fd = torch.zeros_like(v)
            for i in range(v.numel()):
                e = torch.zeros_like(v).view(-1)
                e[i] = eps
                e = e.view_as(v)
                plus = float(f({**meta, g: {**d, k: v + e}}))
                minus = float(f({**meta, g: {**d, k: v - e}}))
                fd.view(-1)[i] = (plus - minus) / (2 * eps)
            out[(g, k)] = fd
    return out


def assert_meta_gradient_matches_fd(learner, meta, support, query):
    grads = learner.meta_gradient(meta, support, query)[0]
    fd = finite_difference(lambda m: learner.meta_loss(m, support, query)[0], meta)
    for (g, k), expected in fd.items():
        assert torch.allclose(grads[g][k], expected, atol=1e-7, rtol=1e-5), (g, k)
    return grads


def test_meta_gradient_matches_finite_differences():
    assert_meta_gradient_matches_fd(*rl_case())


@pytest.mark.parametrize("estimator", ["reinforce", "dice", "lvc"])
def test_meta_gradient_uses_the_estimators_hessian(estimator):
    """d L_out(theta - a g(theta)) / d theta = (I - a H) grad L_out(phi), with g and H the estimator's gradient
    and Hessian (DiCE and LVC are not the derivative of the sampled loss: FD only applies to REINFORCE)."""
    learner, meta, support, query = rl_case(estimator=estimator)
    theta = meta["theta"]
    layout = FlatLayout({"theta": theta})
    unflat = lambda x: layout.unflatten(x)["theta"]  # noqa: E731
    one_s = {k: v[0] for k, v in support[0].items()}
    one_q = {k: v[0] for k, v in query[0].items()}
    x = layout.flatten({"theta": theta})
    inner = lambda x: learner.objective.inner_loss(unflat(x), one_s)  # noqa: E731
    g = torch.autograd.functional.jacobian(inner, x)
    H = torch.autograd.functional.hessian(inner, x)
    phi = x - learner.inner_lr * g
    g_out = torch.autograd.functional.jacobian(lambda p: learner.objective.outer_loss(unflat(p), one_q)[0], phi)
    expected = g_out - learner.inner_lr * H @ g_out
    got = layout.flatten(learner.meta_gradient(meta, support, query)[0])
    assert torch.allclose(got, expected, atol=1e-10, rtol=1e-8)


def test_kl_hessian_vector_product_through_adaptation_matches_finite_differences():
    learner, meta, support, query = rl_case()
    layout = FlatLayout(meta)
    x0 = layout.flatten(meta)
    v = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    kl = lambda x: loss_and_kl(learner, layout.unflatten(x), support, query)[1]  # noqa: E731
    _, hv = torch.autograd.functional.hvp(kl, x0, v)
    eps = 1e-5
    grad_kl = lambda x: torch.autograd.functional.jacobian(kl, x)  # noqa: E731
    assert torch.allclose(hv, (grad_kl(x0 + eps * v) - grad_kl(x0 - eps * v)) / (2 * eps), atol=1e-7, rtol=1e-5)


def test_first_order_meta_gradient_differs_from_second_order():
    second = rl_case()
    first = rl_case(first_order=True)
    g2 = second[0].meta_gradient(*second[1:])[0]["theta"]
    g1 = first[0].meta_gradient(*first[1:])[0]["theta"]
    assert not all(torch.allclose(g1[k], g2[k]) for k in g1)
    # the same loss: only its gradient differs
    assert torch.equal(first[0].meta_loss(*first[1:])[0], second[0].meta_loss(*second[1:])[0])


@pytest.mark.parametrize("first_order", [False, True])
def test_gauss_newton_kl_product_equals_autograd_hvp_at_the_old_params(first_order):
    learner, meta, support, query = rl_case(first_order=first_order)
    # at the params that sampled the query data the KL's gradient in phi vanishes: there H = J^T F J exactly
    phi = learner.adapt_path(meta, support, 1)[1]
    query = [with_old_policy(learner.objective.policy, query[0], phi)]
    layout = FlatLayout(meta)
    v = torch.randn(layout.size, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    kl = lambda x: loss_and_kl(learner, layout.unflatten(x), support, query)[1]  # noqa: E731
    _, hv = torch.autograd.functional.hvp(kl, layout.flatten(meta), v)
    from metarl.algorithms.base import Batch

    gn = GaussNewtonKL(learner, meta, Batch({}, support, query))(layout.unflatten(v))
    assert torch.allclose(layout.flatten(gn), hv, atol=1e-10, rtol=1e-8)


def test_two_inner_steps_take_the_second_step_on_the_second_data_from_the_first_steps_params():
    learner, meta, support, query = rl_case(steps=2)
    one = lambda d: {k: v[0] for k, v in d.items()}  # noqa: E731
    inner, theta = learner.objective.inner_loss, meta["theta"]
    g0 = grad(inner)(theta, one(support[0]))
    phi1 = {k: theta[k] - 0.5 * g0[k] for k in theta}
    g1 = grad(inner)(phi1, one(support[1]))
    phi2 = {k: phi1[k] - 0.5 * g1[k] for k in theta}
    expected, metrics = learner.objective.outer_loss(phi2, one(query[1]))
    loss, kl = loss_and_kl(learner, meta, support, query)
    assert torch.allclose(loss, expected, atol=1e-12) and torch.allclose(kl, metrics["kl"], atol=1e-12)
    path = learner.adapt_path(meta, support, 2)
    assert all(torch.allclose(path[2][k][0], phi2[k], atol=1e-12) for k in theta)


@pytest.mark.parametrize("weights", [(), (0.5, 0.5)])
def test_two_step_meta_gradient_matches_finite_differences(weights):
    assert_meta_gradient_matches_fd(*rl_case(steps=2, weights=weights))


def test_step_loss_weights_mix_the_steps_surrogates():
    cases = [rl_case(steps=2, weights=w) for w in [(1, 0), (0, 1), (1, 3)]]
    _, meta, support, query = cases[0]
    l1, l2, lm = (c[0].meta_loss(meta, support, query)[0] for c in cases)
    assert not torch.allclose(l1, l2)
    assert torch.allclose(lm, 0.25 * l1 + 0.75 * l2, atol=1e-12)


def test_learned_inner_lr_starts_at_inner_lr_and_its_meta_gradient_matches_finite_differences():
    learner, meta, support, query = rl_case(steps=2, learn_inner_lr=True)
    init = learner.init_meta_params()
    assert set(init) == {"theta", "log_inner_lr"} and set(init["log_inner_lr"]) == set(init["theta"])
    assert all(torch.allclose(v, torch.full_like(v, math.log(0.5))) for v in init["log_inner_lr"].values())
    fixed = rl_case(steps=2)[0]
    # at the initial step sizes Meta-SGD is MAML with inner_lr
    assert torch.allclose(learner.meta_loss({**init, "theta": meta["theta"]}, support, query)[0],
                          fixed.meta_loss({"theta": meta["theta"]}, support, query)[0])
    grads = assert_meta_gradient_matches_fd(learner, meta, support, query)
    assert all(float(v.abs().max()) > 0 for v in grads["log_inner_lr"].values())


def test_step_lr_scales_shorten_the_later_steps():
    learner, meta, support, query = rl_case(steps=2)
    scaled = rl_case(steps=2, scales=(1.0, 0.2))[0]
    one = lambda d: {k: v[0] for k, v in d.items()}  # noqa: E731
    inner, theta = learner.objective.inner_loss, meta["theta"]
    phi1 = {k: theta[k] - 0.5 * grad(inner)(theta, one(support[0]))[k] for k in theta}
    phi2 = {k: phi1[k] - 0.1 * grad(inner)(phi1, one(support[1]))[k] for k in theta}
    expected = learner.objective.outer_loss(phi2, one(query[1]))[0]
    assert torch.allclose(scaled.meta_loss(meta, support, query)[0], expected, atol=1e-12)
    assert not torch.allclose(learner.meta_loss(meta, support, query)[0], expected)


def test_conjugate_gradient_solves_spd_system():
    gen = torch.Generator().manual_seed(0)
    M = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    A = M @ M.T + 6 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=gen, dtype=torch.float64)
    x = conjugate_gradient(lambda v: A @ v, b, iters=20)
    assert torch.allclose(A @ x, b, atol=1e-8)
    # stopped early, the product it returns is still A x (TRPO's step length uses it instead of one more product)
    x, Ax = conjugate_gradient(lambda v: A @ v, b, iters=3, with_product=True)
    assert not torch.allclose(A @ x, b, atol=1e-3) and torch.allclose(Ax, A @ x, atol=1e-10)


# ---------------------------------------------------------------- with rollouts

def nav_setup(seed=0, T=4, E=6, H=20, learner_cls=MAML, **kw):
    gen = torch.Generator().manual_seed(seed)
    policy = GaussianMLPPolicy(2, 2, hidden=(16, 16), generator=gen)
    learner = learner_cls(PolicyGradientObjective(policy, clip=kw.pop("clip", 0.0)), parameters_of(policy), inner_lr=0.1, **kw)
    source = RolloutSource(envs.family("Navigation2D"), Navigation2DTasks(), policy, T, seed, torch.device("cpu"),
                           episodes_per_task=E, horizon=H)
    meta = learner.init_meta_params()
    layout = FlatLayout(meta)
    flat = layout.flatten(meta)
    return learner, source, flat, layout


def test_importance_ratio_is_exactly_one_before_the_first_update():
    learner, source, flat, layout = nav_setup()
    meta = layout.unflatten(flat)
    path = source.rollout_path(learner, meta, source.dist.sample(4, torch.Generator().manual_seed(1)), 1, 2,
                               torch.Generator().manual_seed(2), 6)
    batch, _ = source.train_batch(0, learner, meta)
    (data, rollouts, phi) = path[1]
    q = with_old_policy(source.policy, data, phi)
    # the old log-probs are those of the policy that sampled the query episodes
    assert torch.allclose(q["old_log_probs"], rollouts.log_probs, atol=1e-4)
    loss, metrics = learner.meta_loss(meta, batch.support, batch.query)
    assert float(metrics["ratio_dev"]) == 0.0 and float(metrics["kl"]) == 0.0


@pytest.mark.parametrize("max_kl", [0.01, 1e-4])
def test_trpo_step_respects_the_kl_bound_and_improves(max_kl):
    learner, source, flat, layout = nav_setup()
    batch, _ = source.train_batch(0, learner, layout.unflatten(flat))
    problem = MetaProblem(learner, layout)
    old = flat.clone()
    info = TRPOStep(max_kl=max_kl).step(flat, batch, problem)
    assert info["accepted"] == 1.0 and not torch.equal(old, flat)
    loss_old = problem.loss(old, batch)[0]
    loss_new, metrics = problem.loss(flat, batch)
    assert 0.1 * max_kl < float(metrics["kl"]) <= max_kl  # uses the trust region, stays inside
    assert float(loss_new) < float(loss_old)


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_trpo_gauss_newton_fast_path_takes_the_autograd_paths_step(fraction):
    """The fast path (graphs built once, J^T F J products) against the plain one (double backward of the KL
    through the adaptation), float64, on a sampled batch: same search direction, same accepted step."""
    from torch.utils._pytree import tree_map

    from metarl.algorithms.base import Batch

    learner, source, flat, layout = nav_setup(T=4, E=3, H=10)
    batch, _ = source.train_batch(0, learner, layout.unflatten(flat))
    learner.objective.policy.double()
    double = lambda tree: tree_map(lambda t: t.double() if t.is_floating_point() else t, tree)  # noqa: E731
    start = flat.double()
    support = double(batch.support)
    # the old policy of the query data recomputed in float64: the adapted params where the KL is zero
    phi = learner.adapt_path(layout.unflatten(start), support, 1)[1]
    batch = Batch(batch.tasks, support, [with_old_policy(learner.objective.policy, double(batch.query[0]), phi)])
    moved = {}
    for hvp in ("autograd", "gauss_newton"):
        x = start.clone()
        # a damping that conditions the system: with 1e-5, 10 CG iterations on this nearly singular KL Hessian
        # amplify the products' last-digit differences (1e-16) to 1e-4 in the step; the operators are equal
        settings = dict(hvp=hvp, hvp_task_fraction=fraction, max_kl=1e-3, cg_damping=0.1)
        info = TRPOStep(**settings).step(x, batch, MetaProblem(learner, layout))
        assert info["accepted"] == 1.0
        moved[hvp] = x - start
    torch.testing.assert_close(moved["gauss_newton"], moved["autograd"], rtol=1e-9, atol=1e-12)
    assert moved["autograd"].abs().max() > 1e-4


def test_trpo_episode_subset_keeps_every_task_with_evenly_spaced_episodes_and_changes_the_step():
    from torch.utils._pytree import tree_flatten

    from metarl.run.config import Config, from_dict
    from metarl.core.errors import ConfigError
    from metarl.algorithms.base import Batch
    from metarl.outer.trpo import episode_subset

    learner, source, flat, layout = nav_setup(T=3, E=5, H=6)
    batch, _ = source.train_batch(0, learner, layout.unflatten(flat))
    sub, share = TRPOStep(hvp="gauss_newton", hvp_episode_fraction=0.6)._hvp_batch(batch)
    assert sub.num_tasks == 3 and share is None
    for full, part in zip(tree_flatten((batch.support, batch.query))[0], tree_flatten((sub.support, sub.query))[0]):
        assert torch.equal(part, full[:, [0, 2, 4]])
    assert TRPOStep()._hvp_batch(batch) == (batch, None)
    moved = []
    for episode_fraction in (1.0, 0.6):
        x = flat.clone()
        settings = dict(hvp="gauss_newton", hvp_episode_fraction=episode_fraction)
        assert TRPOStep(**settings).step(x, batch, MetaProblem(learner, layout))["accepted"] == 1.0
        moved.append(x - flat)
    assert (moved[0] - moved[1]).abs().max() > 1e-3 * moved[0].abs().max()  # a different Fisher, another step
    with pytest.raises(ValueError, match="tasks, episodes"):
        episode_subset(Batch({}, [{"x": torch.zeros(3)}], []), 0.5)
    base = {"task": {"name": "Navigation2D"}, "outer": {"optimizer": "trpo"}}
    for outer, message in [({"hvp": "gauss_newton", "hvp_episode_fraction": 0.0}, "hvp_episode_fraction"),
                           ({"hvp_episode_fraction": 0.5}, "hvp_episode_fraction needs outer.hvp gauss_newton")]:
        with pytest.raises(ConfigError, match=message):
            from_dict(Config, {**base, "outer": {"optimizer": "trpo", **outer}}).validate()
    with pytest.raises(ConfigError, match="outer.hvp_episode_fraction is not used"):
        from_dict(Config, {**base, "outer": {"optimizer": "ppo", "hvp_episode_fraction": 0.5}}).validate()


def test_trpo_line_search_starts_from_the_last_measured_kl_ratio_and_checkpoints_it():
    learner, source, flat, layout = nav_setup()
    problem, step = MetaProblem(learner, layout), TRPOStep(max_kl=0.01)
    batch, _ = source.train_batch(0, learner, layout.unflatten(flat))
    info = step.step(flat, batch, problem)
    assert info["accepted"] == 1.0
    ratio = info["kl"] / (0.01 * info["step_frac"] ** 2)
    assert step.kl_ratio == pytest.approx(ratio) and step.state_dict() == {"kl_ratio": step.kl_ratio}
    step.kl_ratio = 1.21  # the model fell 21% short last time: the first trial is 0.98 / 1.1 of the full step
    batch, _ = source.train_batch(1, learner, layout.unflatten(flat))
    info = step.step(flat, batch, problem)
    assert info["step_frac"] == pytest.approx(0.98 / 1.1 * 0.8 ** round(math.log(info["step_frac"] * 1.1 / 0.98, 0.8)))
    fresh = TRPOStep()
    fresh.load_state_dict({"kl_ratio": 1.5})
    assert fresh.kl_ratio == 1.5
    fresh.load_state_dict({})  # a checkpoint from before the ratio was kept
    assert fresh.kl_ratio == 1.0


@pytest.mark.parametrize("outer", ["trpo", "ppo"])
def test_same_seed_same_returns(outer):
    runs = []
    for _ in range(2):
        learner, source, flat, layout = nav_setup(seed=7, clip=0.2 if outer == "ppo" else 0.0)
        step = TRPOStep() if outer == "trpo" else \
            GradientStep(FlatAdam(flat), lambda it: 1e-3, epochs=3)
        history = []
        for it in range(2):
            batch, m = source.train_batch(it, learner, layout.unflatten(flat))
            step.step(flat, batch, MetaProblem(learner, layout), it)
            history.append((m["return_pre"], m["return_post"]))
        runs.append((history, flat))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])
    assert runs[0][0][0] != runs[0][0][1]  # the params did move


def test_ppo_epochs_lower_the_clipped_surrogate():
    learner, source, flat, layout = nav_setup(clip=0.2)
    batch, _ = source.train_batch(0, learner, layout.unflatten(flat))
    problem = MetaProblem(learner, layout)
    before = float(problem.loss(flat, batch)[0])
    info = GradientStep(FlatAdam(flat), lambda it: 1e-3, epochs=5).step(flat, batch, problem, 0)
    assert float(problem.loss(flat, batch)[0]) < before and info["meta_loss_last_epoch"] < info["meta_loss"]


def test_multi_step_batch_collects_once_per_step_and_is_reproducible():
    metrics, supports = [], []
    for _ in range(2):
        learner, source, flat, layout = nav_setup(seed=3, inner_steps=3)
        batch, m = source.train_batch(5, learner, layout.unflatten(flat))
        assert len(batch.support) == 3 and len(batch.query) == 3
        assert {"return_pre", "return_step1", "return_step2", "return_post"} <= set(m)
        assert m["env_steps"] == 4 * 4 * 6 * 20  # 4 collections of T x E x H (no early termination this soon)
        assert m["episode_length_pre"] == m["episode_length_post"] == 20
        metrics.append(m), supports.append(batch.support[2]["obs"])
    assert metrics[0] == metrics[1] and torch.equal(supports[0], supports[1])


def test_reptile_rl_moves_theta_towards_the_adapted_params():
    learner, source, flat, layout = nav_setup(learner_cls=Reptile, inner_steps=2)
    meta = layout.unflatten(flat)
    batch, m = source.train_batch(0, learner, meta)
    assert len(batch.query) == 0 and "return_step1" not in m  # k collections, no query collection
    # replayed by hand: phi after two steps, each on the episodes the previous params collected
    phi = learner.adapt_path(meta, batch.support, 2)[-1]
    theta = {k: v.clone() for k, v in meta["theta"].items()}
    GradientStep(torch_sgd(flat), lambda it: 1.0).step(flat, batch, MetaProblem(learner, layout), 0)
    new = layout.unflatten(flat)["theta"]
    assert all(torch.allclose(new[k], phi[k].mean(0), atol=1e-6) for k in new)  # epsilon = 1: the mean of phi
    assert not torch.allclose(new["mean.4.bias"], theta["mean.4.bias"])


def torch_sgd(flat):
    from metarl.core.numerics import FlatSGD

    return FlatSGD(flat)


def test_trpo_task_subsample_is_chosen_in_the_whole_batch_so_ranks_use_the_tasks_one_process_would():
    """10 tasks, a quarter for the curvature: tasks 0, 3, 6, 9 of the whole batch. Split over ranks as
    (0..4), (5..9) and (0..2), (3..9), each rank keeps those of its part, weighted by their share of the 4."""
    from dataclasses import replace

    learner, source, flat, layout = nav_setup(T=10, E=2, H=4)
    batch, _ = source.train_batch(0, learner, layout.unflatten(flat))
    step = TRPOStep(hvp_task_fraction=0.4)
    whole, share = step._hvp_batch(batch)
    assert torch.equal(whole.tasks["goal"], batch.tasks["goal"][[0, 3, 6, 9]]) and share == 1.0
    for first, n, kept in ((0, 5, [0, 3]), (5, 5, [6, 9]), (0, 3, [0]), (3, 7, [3, 6, 9])):
        part = replace(batch.take(slice(first, first + n)), first=first, total=10)
        sub, share = step._hvp_batch(part)
        assert torch.equal(sub.tasks["goal"], batch.tasks["goal"][kept]) and share == len(kept) / 4
    none, share = step._hvp_batch(replace(batch.take(slice(1, 3)), first=1, total=10))
    assert none is None and share == 0.0
