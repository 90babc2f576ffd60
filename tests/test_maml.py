"""Meta-gradients against finite differences and hand-written loops (float64)."""
import pytest
import torch
from torch import nn

from metarl.algorithms.maml import MAML
from metarl.core.errors import ConfigError
from metarl.algorithms.reptile import Reptile
from metarl.nets import parameters_of
from metarl.nets.mlp import MLP
from metarl.run.config import Config, from_dict
from metarl.supervised.objective import SupervisedObjective



@pytest.fixture(autouse=True)
def float64_default():
    # Finite differences need float64; restore the default so other test modules keep float32.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def small_problem(tasks=3, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    model = MLP(1, [8, 8], 1, generator=g).double()
    # tanh makes every second derivative non-zero (ReLU's vanish almost everywhere)
    model[1] = nn.Tanh()
    model[3] = nn.Tanh()
    xs, ys = torch.randn(tasks, k, 1, generator=g), torch.randn(tasks, k, 1, generator=g)
    xq, yq = torch.randn(tasks, k, 1, generator=g), torch.randn(tasks, k, 1, generator=g)
    return model, (xs, ys), (xq, yq)


def flat(meta):
    return torch.cat([t.reshape(-1) for g in meta.values() for t in g.values()])


def unflat(vec, like):
    out, i = {}, 0
    for g, d in like.items():
        out[g] = {}
        for k, t in d.items():
            out[g][k] = vec[i : i + t.numel()].view_as(t)
            i += t.numel()
    return out


def fd_gradient(learner, meta, support, query, eps=1e-6):
    x0 = flat(meta)
    grad = torch.zeros_like(x0)
    for i in range(x0.numel()):
        e = torch.zeros_like(x0)
        e[i] = eps
        lp = learner.meta_loss(unflat(x0 + e, meta), support, query)[0]
        lm = learner.meta_loss(unflat(x0 - e, meta), support, query)[0]
        grad[i] = (lp - lm) / (2 * eps)
    return grad


def loop_meta_gradient(model, meta, support, query, lr, steps, first_order):
    """Reference: a per-task Python loop with torch.autograd (the learn2learn way)."""
    obj = SupervisedObjective(model)
    theta = {k: v.clone().requires_grad_(True) for k, v in meta["theta"].items()}
    total = 0.0
    for i in range(support[0].shape[0]):
        params = theta
        for _ in range(steps):
            loss = obj.inner_loss(params, (support[0][i], support[1][i]))
            gs = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order)
            params = {k: p - lr * g for (k, p), g in zip(params.items(), gs)}
        total = total + obj.outer_loss(params, (query[0][i], query[1][i]))[0]
    total = total / support[0].shape[0]
    gs = torch.autograd.grad(total, list(theta.values()))
    return torch.cat([g.reshape(-1) for g in gs])


def test_second_order_maml_matches_finite_differences_two_steps():
    model, support, query = small_problem()
    learner = MAML(SupervisedObjective(model), parameters_of(model), inner_lr=0.1, inner_steps=2)
    meta = learner.init_meta_params()
    grads, loss, _ = learner.meta_gradient(meta, support, query)
    fd = fd_gradient(learner, meta, support, query)
    torch.testing.assert_close(flat(grads), fd, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(flat(grads), loop_meta_gradient(model, meta, support, query, 0.1, 2, False))


def test_first_order_differs_from_maml_and_equals_detached_inner_gradients():
    model, support, query = small_problem()
    init = parameters_of(model)
    maml = MAML(SupervisedObjective(model), init, inner_lr=0.1, inner_steps=2)
    fomaml = MAML(SupervisedObjective(model), init, inner_lr=0.1, inner_steps=2, first_order=True)
    meta = maml.init_meta_params()
    g2 = flat(maml.meta_gradient(meta, support, query)[0])
    g1 = flat(fomaml.meta_gradient(meta, support, query)[0])
    assert (g2 - g1).norm() > 1e-3 * g2.norm()
    torch.testing.assert_close(g1, loop_meta_gradient(model, meta, support, query, 0.1, 2, True))
    # the losses themselves are the same function of theta: only the gradient differs
    torch.testing.assert_close(maml.meta_loss(meta, support, query)[0], fomaml.meta_loss(meta, support, query)[0])


def test_every_task_contributes_and_batch_gradient_is_the_mean():
    model, support, query = small_problem(tasks=4)
    learner = MAML(SupervisedObjective(model), parameters_of(model), inner_lr=0.1, inner_steps=1)
    meta = learner.init_meta_params()
    batch = flat(learner.meta_gradient(meta, support, query)[0])
    per_task = []
    for i in range(4):
        one = lambda d: tuple(t[i : i + 1] for t in d)  # noqa: E731
        g = flat(learner.meta_gradient(meta, one(support), one(query))[0])
        assert g.norm() > 1e-6
        per_task.append(g)
    torch.testing.assert_close(batch, torch.stack(per_task).mean(0))


def test_meta_sgd_learning_rate_gradient_matches_finite_differences():
    model, support, query = small_problem(tasks=2, k=4)
    learner = MAML(SupervisedObjective(model), parameters_of(model), inner_lr=0.05, inner_steps=2, learn_inner_lr=True)
    meta = learner.init_meta_params()
    assert set(meta) == {"theta", "log_inner_lr"}
    grads = learner.meta_gradient(meta, support, query)[0]
    assert flat({"lr": grads["log_inner_lr"]}).abs().max() > 0
    torch.testing.assert_close(flat(grads), fd_gradient(learner, meta, support, query), rtol=1e-6, atol=1e-8)


def test_learned_step_scales_match_finite_differences_and_extend_past_training_steps():
    model, support, query = small_problem(tasks=2, k=4)
    learner = MAML(SupervisedObjective(model), parameters_of(model), inner_lr=0.05, inner_steps=2,
                   learn_inner_lr=True, learn_step_scale=True, step_loss_weights=(1.0, 1.0))
    meta = learner.init_meta_params()
    meta["log_step_scale"]["steps"] = torch.tensor([0.3, -0.2])
    grads = learner.meta_gradient(meta, support, query)[0]
    torch.testing.assert_close(flat(grads), fd_gradient(learner, meta, support, query), rtol=1e-6, atol=1e-8)
    # a third step (evaluation beyond training) reuses the last scale
    path = learner.adapt_path(meta, support, 3)
    g = torch.func.vmap(torch.func.grad(learner.objective.inner_loss))(path[2], support)
    lr = {k: v.exp() * torch.exp(torch.tensor(-0.2)) for k, v in meta["log_inner_lr"].items()}
    torch.testing.assert_close(path[3]["0.weight"], path[2]["0.weight"] - lr["0.weight"] * g["0.weight"])


def test_per_step_learning_rates_match_finite_differences_and_extend_past_training_steps():
    model, support, query = small_problem(tasks=2, k=4)
    learner = MAML(SupervisedObjective(model), parameters_of(model), inner_lr=0.05, inner_steps=2,
                   learn_inner_lr=True, inner_lr_per_step=True, learn_step_scale=True, step_loss_weights=(2.0, 1.0))
    meta = learner.init_meta_params()
    assert all(v.shape == (2, *meta["theta"][k].shape) for k, v in meta["log_inner_lr"].items())
    g = torch.Generator().manual_seed(1)
    meta["log_inner_lr"] = {k: v + 0.3 * torch.randn(v.shape, generator=g) for k, v in meta["log_inner_lr"].items()}
    meta["log_step_scale"]["steps"] = torch.tensor([0.3, -0.2])
    grads = learner.meta_gradient(meta, support, query)[0]
    # both steps' sizes get a gradient of their own, and all of it matches finite differences
    assert all(v[0].abs().max() > 0 and v[1].abs().max() > 0 for v in grads["log_inner_lr"].values())
    torch.testing.assert_close(flat(grads), fd_gradient(learner, meta, support, query), rtol=1e-6, atol=1e-8)
    # step s uses its own sizes; a third step (evaluation beyond training) reuses the second step's
    path = learner.adapt_path(meta, support, 3)
    inner_grad = torch.func.vmap(torch.func.grad(learner.objective.inner_loss))
    scales = meta["log_step_scale"]["steps"].exp()
    for s, i in ((0, 0), (1, 1), (2, 1)):
        g_s = inner_grad(path[s], support)
        for k in path[s]:
            lr = meta["log_inner_lr"][k][i].exp() * scales[i]
            torch.testing.assert_close(path[s + 1][k], path[s][k] - lr * g_s[k])
    # per-step sizes all equal to the shared ones give the same adaptation as plain Meta-SGD
    shared = MAML(SupervisedObjective(model), parameters_of(model), inner_lr=0.05, inner_steps=2, learn_inner_lr=True)
    per_step = MAML(SupervisedObjective(model), parameters_of(model), inner_lr=0.05, inner_steps=2,
                    learn_inner_lr=True, inner_lr_per_step=True)
    torch.testing.assert_close(per_step.meta_loss(per_step.init_meta_params(), support, query)[0],
                               shared.meta_loss(shared.init_meta_params(), support, query)[0])


def test_config_rejects_per_step_learning_rates_without_meta_sgd():
    from metarl.run.config import Config
    from metarl.core.errors import ConfigError

    cfg = Config()
    cfg.learner.inner_lr_per_step = True
    with pytest.raises(ConfigError, match="inner_lr_per_step"):
        cfg.validate()
    cfg.learner.learn_inner_lr = True
    cfg.validate()


def test_multi_step_loss_averages_query_losses_over_steps():
    model, support, query = small_problem()
    init = parameters_of(model)
    mean_learner = MAML(SupervisedObjective(model), init, inner_lr=0.1, inner_steps=3, step_loss_weights=(1.0,) * 3)
    meta = mean_learner.init_meta_params()
    expected = torch.stack([MAML(SupervisedObjective(model), init, inner_lr=0.1, inner_steps=s)
                            .meta_loss(meta, support, query)[0] for s in (1, 2, 3)]).mean()
    torch.testing.assert_close(mean_learner.meta_loss(meta, support, query)[0], expected)
    weighted = MAML(SupervisedObjective(model), init, inner_lr=0.1, inner_steps=2, step_loss_weights=(3.0, 1.0))
    one, two = (MAML(SupervisedObjective(model), init, inner_lr=0.1, inner_steps=s).meta_loss(meta, support, query)[0]
                for s in (1, 2))
    torch.testing.assert_close(weighted.meta_loss(meta, support, query)[0], 0.75 * one + 0.25 * two)


class Quadratic:
    """L(p) = 0.5 (p - c)^T A (p - c) for one task; data = (A, c)."""

    def inner_loss(self, params, data):
        A, c = data
        d = params["w"] - c
        return 0.5 * d @ A @ d

    def outer_loss(self, params, data):
        return self.inner_loss(params, data), {}

    def metrics(self, params, data):
        return {"loss": self.inner_loss(params, data)}


def test_reptile_update_equals_closed_form_on_quadratic():
    g = torch.Generator().manual_seed(1)
    tasks, dim, k, alpha, eps = 5, 3, 4, 0.1, 0.5
    m = torch.randn(tasks, dim, dim, generator=g)
    A = m @ m.transpose(1, 2) / dim + torch.eye(dim)
    c = torch.randn(tasks, dim, generator=g)
    theta = torch.randn(dim, generator=g)
    learner = Reptile(Quadratic(), {"w": theta}, inner_lr=alpha, inner_steps=k)
    meta = learner.init_meta_params()
    grads, _, _ = learner.meta_gradient(meta, (A, c), (A, c))
    w = meta["theta"]["w"]
    opt = torch.optim.SGD([w], lr=eps)
    w.grad = grads["theta"]["w"]
    opt.step()
    # phi_i = c_i + (I - alpha A_i)^k (theta - c_i)
    phis = torch.stack([c[i] + torch.linalg.matrix_power(torch.eye(dim) - alpha * A[i], k) @ (theta - c[i])
                        for i in range(tasks)])
    torch.testing.assert_close(w, theta + eps * (phis.mean(0) - theta))


def test_reptile_inner_batches_step_on_consecutive_minibatches_in_turn():
    model, (xs, ys), query = small_problem(tasks=2, k=6)
    steps, m, lr = 5, 3, 0.1
    learner = Reptile(SupervisedObjective(model), parameters_of(model), inner_lr=lr, inner_steps=steps, inner_batches=m)
    meta = learner.init_meta_params()
    grads = learner.meta_gradient(meta, [(xs, ys)], [query])[0]["theta"]
    theta = meta["theta"]
    expected = {k: torch.zeros_like(v) for k, v in theta.items()}
    for i in range(2):  # plain SGD, step s on examples 2(s mod 3) .. 2(s mod 3) + 1 of task i
        phi = {k: v.detach().clone().requires_grad_() for k, v in theta.items()}
        for s in range(steps):
            lo = 2 * (s % m)
            loss = learner.objective.inner_loss(phi, (xs[i, lo:lo + 2], ys[i, lo:lo + 2]))
            g = torch.autograd.grad(loss, list(phi.values()))
            phi = {k: (v - lr * d).detach().requires_grad_() for (k, v), d in zip(phi.items(), g)}
        for k in theta:
            expected[k] += (theta[k] - phi[k].detach()) / 2
    for k in theta:
        torch.testing.assert_close(grads[k], expected[k])
    whole = Reptile(SupervisedObjective(model), parameters_of(model), inner_lr=lr, inner_steps=steps)
    full = whole.meta_gradient(whole.init_meta_params(), [(xs, ys)], [query])[0]["theta"]
    assert not torch.allclose(flat({"t": full}), flat({"t": grads}))


def test_reptile_inner_batches_rules():
    base = {"task": {"name": "Omniglot", "k_support": 10}, "learner": {"algo": "reptile", "inner_batches": 5}}
    from_dict(Config, base).validate()
    with pytest.raises(ConfigError, match="must divide task.k_support"):
        from_dict(Config, {**base, "learner": {"algo": "reptile", "inner_batches": 3}}).validate()
    with pytest.raises(ConfigError, match="RL steps collect their own episodes"):
        from_dict(Config, {"task": {"name": "Navigation2D"}, "learner": {"algo": "reptile", "inner_batches": 2}}).validate()
    with pytest.raises(ConfigError, match="learner.inner_batches is not used with learner.algo maml"):
        from_dict(Config, {**base, "learner": {"algo": "maml", "inner_batches": 5}}).validate()


def test_adapt_does_not_touch_module_weights():
    model, support, query = small_problem()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    learner = MAML(SupervisedObjective(model), parameters_of(model), inner_lr=0.1, inner_steps=2)
    meta = learner.init_meta_params()
    adapted = learner.adapt_path(meta, support, 2)[-1]
    assert adapted["0.weight"].shape[0] == 3
    assert not torch.equal(adapted["0.weight"][0], meta["theta"]["0.weight"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_invalid_hyperparameters_are_rejected_with_the_config():
    for learner, message in (({"inner_lr": 0.0}, "learner.inner_lr must be positive"),
                             ({"inner_steps": 0}, "learner.inner_steps must be positive"),
                             ({"step_lr_scales": [1.0, 0.0]}, "learner.step_lr_scales must be positive"),
                             ({"inner_steps": 2, "step_loss_weights": [1.0]}, "learner.step_loss_weights needs")):
        with pytest.raises(ConfigError, match=message):
            from_dict(Config, {"learner": learner}).validate()


def test_fixed_step_lr_scales_shorten_later_steps_and_repeat_the_last():
    model, support, query = small_problem(tasks=2, k=4)
    init = parameters_of(model)
    scaled = MAML(SupervisedObjective(model), init, inner_lr=0.1, inner_steps=2, step_lr_scales=(1.0, 0.2))
    meta = scaled.init_meta_params()
    assert [scaled.step_size(meta, s)["0.weight"] for s in (0, 1, 5)] == pytest.approx([0.1, 0.02, 0.02])
    path = scaled.adapt_path(meta, support, 3)
    inner_grad = torch.func.vmap(torch.func.grad(scaled.objective.inner_loss))
    for s, lr in ((0, 0.1), (1, 0.02), (2, 0.02)):
        g = inner_grad(path[s], support)
        torch.testing.assert_close(path[s + 1]["0.weight"], path[s]["0.weight"] - lr * g["0.weight"])
    grads = scaled.meta_gradient(meta, support, query)[0]
    torch.testing.assert_close(flat(grads), fd_gradient(scaled, meta, support, query), rtol=1e-6, atol=1e-8)
