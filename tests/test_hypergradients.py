"""The hypergradient options of MAML (learner.hypergradient) against closed forms and finite differences, in
float64, on quadratic tasks small enough to solve exactly:

    L_inner(phi) = 1/2 (phi - a)^T A (phi - a),    L_outer(phi) = 1/2 (phi - b)^T B (phi - b)

(support and query data are two (matrix, centre) pairs). One gradient step is phi -> phi - alpha A (phi - a),
so d phi_k / d theta = (I - alpha A)^k, and the proximal inner optimum is
phi*(theta) = (A + lambda I)^-1 (A a + lambda theta)."""
import pytest
import torch
from test_maml import Quadratic  # inner and outer loss 1/2 (w - c)^T A (w - c) of the task's own (A, c)

from metarl.algorithms.maml import MAML
from metarl.core.executor import TaskExecutor

D = 4


def spd(g, n_tasks):
    m = torch.randn(n_tasks, D, D, generator=g, dtype=torch.float64)
    return m @ m.transpose(1, 2) / D + 0.5 * torch.eye(D, dtype=torch.float64)


@pytest.fixture
def problem():
    g = torch.Generator().manual_seed(0)
    support = (spd(g, 3), torch.randn(3, D, generator=g, dtype=torch.float64))
    query = (spd(g, 3), torch.randn(3, D, generator=g, dtype=torch.float64))
    theta = torch.randn(D, generator=g, dtype=torch.float64)
    return support, query, theta


def learner(theta, batching="loop", **kw):
    return MAML(Quadratic(), {"w": theta}, inner_lr=0.1, executor=TaskExecutor(batching), **kw)


def meta_grad(maml, support, query):
    return maml.meta_gradient(maml.init_meta_params(), support, query)[0]["theta"]["w"]


def fd_grad(f, theta, eps=1e-6):
    return torch.stack([(f(theta + eps * e) - f(theta - eps * e)) / (2 * eps) for e in torch.eye(D, dtype=theta.dtype)])


@pytest.mark.parametrize("batching", ["loop", "threads", "vmap"])
def test_unrolled_matches_finite_differences_and_first_order_differs(problem, batching):
    support, query, theta = problem
    maml = learner(theta, batching, inner_steps=3)
    exact = meta_grad(maml, support, query)

    def meta_loss(t):
        return learner(t, inner_steps=3).meta_loss({"theta": {"w": t}}, support, query)[0]

    torch.testing.assert_close(exact, fd_grad(meta_loss, theta), rtol=1e-7, atol=1e-9)
    first = meta_grad(learner(theta, batching, inner_steps=3, first_order=True), support, query)
    assert (first - exact).abs().max() > 1e-3


@pytest.mark.parametrize("j", [1, 2])
def test_truncated_is_second_order_through_the_last_steps_only(problem, j):
    support, query, theta = problem
    k, alpha = 3, 0.1
    got = meta_grad(learner(theta, inner_steps=k, hypergradient="truncated", truncate_steps=j), support, query)
    expected = []
    for (A, a), (B, b) in zip(zip(*support), zip(*query)):
        phi = theta.clone()
        for _ in range(k):
            phi = phi - alpha * A @ (phi - a)
        jac = torch.linalg.matrix_power(torch.eye(D, dtype=theta.dtype) - alpha * A, j)  # symmetric
        expected.append(jac @ (B @ (phi - b)))
    torch.testing.assert_close(got, torch.stack(expected).mean(0), rtol=1e-10, atol=1e-12)
    unrolled = meta_grad(learner(theta, inner_steps=k), support, query)
    first = meta_grad(learner(theta, inner_steps=k, first_order=True), support, query)
    assert (got - unrolled).abs().max() > 1e-4 and (got - first).abs().max() > 1e-4


@pytest.mark.parametrize("batching", ["loop", "threads"])
def test_implicit_is_the_exact_hypergradient_at_the_proximal_optimum(problem, batching):
    support, query, theta = problem
    lam = 2.0
    maml = learner(theta, batching, inner_steps=300, hypergradient="implicit", implicit_lambda=lam,
                   implicit_cg_steps=D)
    got = meta_grad(maml, support, query)

    def outer_at_optimum(t):
        total = 0.0
        for (A, a), (B, b) in zip(zip(*support), zip(*query)):
            phi = torch.linalg.solve(A + lam * torch.eye(D, dtype=t.dtype), A @ a + lam * t)
            total = total + 0.5 * (phi - b) @ B @ (phi - b)
        return total / len(support[0])

    torch.testing.assert_close(got, fd_grad(outer_at_optimum, theta), rtol=1e-6, atol=1e-8)
    # the inner steps reach the proximal optimum: the same phi as the closed form
    A, a = support[0][0], support[1][0]
    phi = maml.adapt_path(maml.init_meta_params(), (support[0][:1], support[1][:1]), 300)[-1]["w"][0]
    torch.testing.assert_close(phi, torch.linalg.solve(A + lam * torch.eye(D, dtype=theta.dtype), A @ a + lam * theta))


def test_config_checks_the_hypergradient_options():
    from metarl.run.config import Config, from_dict
    from metarl.core.errors import ConfigError

    ok = from_dict(Config, {"learner": {"inner_steps": 3, "hypergradient": "truncated", "truncate_steps": 2}})
    assert ok.validate().learner.truncate_steps == 2
    for learner_cfg, message in [
        ({"inner_steps": 3, "hypergradient": "truncated", "truncate_steps": 3}, r"truncate_steps must be in 1..inner_steps-1 = 2, got 3"),
        ({"truncate_steps": 2}, "learner.truncate_steps is not used with learner.hypergradient unrolled"),
        ({"hypergradient": "implicit", "first_order": True}, "does not combine"),
        ({"hypergradient": "implicit", "learn_inner_lr": True}, "fixed inner step size"),
        ({"hypergradient": "implicit", "implicit_lambda": 0.0}, "implicit_lambda must be positive"),
        ({"algo": "reptile", "hypergradient": "truncated"}, "learner.hypergradient is not used with learner.algo reptile"),
    ]:
        with pytest.raises(ConfigError, match=message):
            from_dict(Config, {"learner": learner_cfg}).validate()
