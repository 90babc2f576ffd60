import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from metarl.nets.convnet import ConvNet, reference_forward
from metarl.core.executor import TaskExecutor
from metarl.algorithms.maml import MAML
from metarl.algorithms.reptile import Reptile
from metarl.nets import parameters_of
from metarl.supervised.objective import SupervisedObjective

WAYS = 5
SIDE = 16  # small drawings keep the float64 tests fast: 16 -> 8 -> 4 -> 2 -> 1


def _net(channels=8, seed=0, dtype=torch.float64, side=SIDE):
    net = ConvNet(1, WAYS, channels=channels, image_size=side, generator=torch.Generator().manual_seed(seed)).to(dtype)
    return net, parameters_of(net)


def _episode(tasks=3, shots=1, query=2, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    sx = torch.rand(tasks, WAYS * shots, 1, SIDE, SIDE, generator=g, dtype=dtype)
    qx = torch.rand(tasks, WAYS * query, 1, SIDE, SIDE, generator=g, dtype=dtype)
    sy = torch.arange(WAYS).repeat(shots).expand(tasks, -1).contiguous()
    qy = torch.arange(WAYS).repeat(query).expand(tasks, -1).contiguous()
    return (sx, sy), (qx, qy)


def test_shapes_names_and_seeded_init():
    net, params = _net(channels=64, dtype=torch.float32, side=28)
    assert net(torch.rand(7, 1, 28, 28)).shape == (7, WAYS)
    assert params["head.weight"].shape == (WAYS, 64)  # 28 -> 14 -> 7 -> 3 -> 1
    assert sorted(k for k in params if k.startswith("blocks.0")) == [
        "blocks.0.conv.bias", "blocks.0.conv.weight", "blocks.0.norm.bias", "blocks.0.norm.weight"]
    assert not list(net.buffers())  # batch norm keeps no running statistics
    _, again = _net(channels=64, dtype=torch.float32, side=28)
    assert all(torch.equal(params[k], again[k]) for k in params)
    with pytest.raises(ValueError, match="too small"):
        ConvNet(1, WAYS, image_size=8)


def test_matches_torch_conv_batchnorm_pool_reference():
    net, params = _net(side=28)
    x = torch.rand(6, 1, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(functional_call(net, params, (x,)), reference_forward(params, x))


def test_batch_norm_uses_the_batch_statistics():
    """Transductive: a query drawing's logits depend on the other drawings it is normalised with."""
    net, params = _net()
    x = torch.rand(4, 1, SIDE, SIDE, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    full = functional_call(net, params, (x,))
    half = functional_call(net, params, (x[:2],))
    assert not torch.allclose(full[:2], half)
    # with the batch statistics of exactly the same batch, the result is the same
    torch.testing.assert_close(functional_call(net, params, (x[:2].clone(),)), half)


def test_vmapped_per_task_params_equal_a_loop():
    net, params = _net()
    tasks = 3
    g = torch.Generator().manual_seed(3)
    batched = {k: v + 0.1 * torch.randn((tasks, *v.shape), generator=g, dtype=v.dtype) for k, v in params.items()}
    x = torch.rand(tasks, 5, 1, SIDE, SIDE, dtype=torch.float64, generator=g)
    out = vmap(lambda p, xi: functional_call(net, p, (xi,)))(batched, x)
    for t in range(tasks):
        torch.testing.assert_close(out[t], reference_forward({k: v[t] for k, v in batched.items()}, x[t]))


def _loop_meta_gradient(params, support, query, lr, steps):
    """Second-order MAML by hand: one task at a time, autograd.grad(create_graph=True)."""
    theta = {k: v.clone().requires_grad_() for k, v in params.items()}
    names = list(theta)
    tasks = support[0].shape[0]
    total = 0.0
    for i in range(tasks):
        fast = theta
        for _ in range(steps):
            loss = F.cross_entropy(reference_forward(fast, support[0][i]), support[1][i])
            g = torch.autograd.grad(loss, [fast[k] for k in names], create_graph=True)
            fast = {k: fast[k] - lr * gk for k, gk in zip(names, g)}
        total = total + F.cross_entropy(reference_forward(fast, query[0][i]), query[1][i]) / tasks
    grads = torch.autograd.grad(total, [theta[k] for k in names])
    return dict(zip(names, grads)), total.detach()


def test_maml_meta_gradient_matches_per_task_loop():
    net, params = _net()
    support, query = _episode()
    learner = MAML(SupervisedObjective(net, "cross_entropy"), params, inner_lr=0.4, inner_steps=2)
    grads, loss, metrics = learner.meta_gradient(learner.init_meta_params(), support, query)
    ref, ref_loss = _loop_meta_gradient(params, support, query, 0.4, 2)
    torch.testing.assert_close(loss, ref_loss)
    for k in params:
        torch.testing.assert_close(grads["theta"][k], ref[k], rtol=1e-7, atol=1e-9)
    assert 0 <= float(metrics["accuracy"]) <= 1


def test_meta_gradient_matches_finite_differences_in_one_direction():
    net, params = _net(channels=4)
    support, query = _episode(tasks=2)
    learner = MAML(SupervisedObjective(net, "cross_entropy"), params, inner_lr=0.4, inner_steps=1)
    meta = learner.init_meta_params()
    grads, _, _ = learner.meta_gradient(meta, support, query)
    g = torch.Generator().manual_seed(5)
    d = {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in params.items()}
    eps = 1e-7  # ReLU / max-pool kinks lie within 1e-6 of this point: a larger step straddles them
    shifted = lambda s: {"theta": {k: v + s * eps * d[k] for k, v in params.items()}}  # noqa: E731
    fd = (learner.meta_loss(shifted(1), support, query)[0] - learner.meta_loss(shifted(-1), support, query)[0]) / (2 * eps)
    analytic = sum((grads["theta"][k] * d[k]).sum() for k in params)
    torch.testing.assert_close(analytic, fd, rtol=1e-6, atol=1e-8)


def test_first_order_differs_and_every_foundation_learner_runs():
    net, params = _net()
    support, query = _episode()
    obj = SupervisedObjective(net, "cross_entropy")
    second = MAML(obj, params, inner_lr=0.4)
    first = MAML(obj, params, inner_lr=0.4, first_order=True)
    g2 = second.meta_gradient(second.init_meta_params(), support, query)[0]["theta"]
    g1 = first.meta_gradient(first.init_meta_params(), support, query)[0]["theta"]
    assert not torch.allclose(g1["blocks.1.conv.weight"], g2["blocks.1.conv.weight"])
    meta_sgd = MAML(obj, params, inner_lr=0.4, learn_inner_lr=True)
    gs = meta_sgd.meta_gradient(meta_sgd.init_meta_params(), support, query)[0]
    (lr_group,) = set(gs) - {"theta"}  # the learned per-parameter step sizes
    assert all(torch.isfinite(v).all() and v.abs().sum() > 0 for v in gs[lr_group].values())
    reptile = Reptile(obj, params, inner_lr=0.1, inner_steps=3)
    gr, loss, _ = reptile.meta_gradient(reptile.init_meta_params(), support, query)
    assert torch.isfinite(loss) and gr["theta"]["head.weight"].abs().sum() > 0


def test_maml_query_loss_falls_on_a_fixed_batch():
    net, params = _net(dtype=torch.float32)
    support, query = _episode(tasks=4, dtype=torch.float32)
    query = (support[0], support[1])  # a task set the meta-learner can fit
    learner = MAML(SupervisedObjective(net, "cross_entropy"), params, inner_lr=0.4)
    meta = learner.init_meta_params()
    leaves = [t.requires_grad_() for t in meta["theta"].values()]
    opt = torch.optim.Adam(leaves, lr=0.01)
    losses = []
    for _ in range(10):
        grads, loss, _ = learner.meta_gradient(meta, support, query)
        for k, t in meta["theta"].items():
            t.grad = grads["theta"][k]
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("layout", ["channels_last", "nchw"])
def test_support_statistics_classify_each_query_without_the_other_queries(layout):
    net, params = _net(channels=4)
    net.layout = layout
    (sx, _), (qx, _) = _episode(tasks=1, query=3)
    sx, qx = sx[0], qx[0]
    obj = SupervisedObjective(net, "cross_entropy")
    all_queries = obj.predict(params, qx, sx)
    # a query's logits do not change with the other queries (here: with only every other one present)
    torch.testing.assert_close(obj.predict(params, qx[::2], sx), all_queries[::2], rtol=1e-10, atol=1e-12)
    # and the support rows, normalised by their own statistics, are what the transductive forward gives them
    out = functional_call(net, params, (torch.cat([sx, qx]),), {"reference_rows": sx.shape[0]})
    torch.testing.assert_close(out[: sx.shape[0]], obj.predict(params, sx), rtol=1e-10, atol=1e-12)
    # while the transductive query logits depend on the query batch
    assert not torch.allclose(obj.predict(params, qx[::2])[0], obj.predict(params, qx)[0])


def test_support_statistics_meta_gradient_is_the_same_vmapped_or_looped_and_matches_finite_differences():
    net, params = _net(channels=4)
    support, (qx, qy) = _episode(tasks=2, query=2)
    query = (qx, qy, support[0])  # the query data of the support-statistics protocol
    grads = {}
    for layout, batching in (("channels_last", "vmap"), ("nchw", "loop")):
        net.layout = layout
        learner = MAML(SupervisedObjective(net, "cross_entropy"), params, inner_lr=0.4, inner_steps=1,
                       executor=TaskExecutor(batching))
        meta = learner.init_meta_params()
        grads[batching] = learner.meta_gradient(meta, support, query)[0]["theta"]
    for k in params:
        torch.testing.assert_close(grads["loop"][k], grads["vmap"][k], rtol=1e-8, atol=1e-10)
    d = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(5), dtype=v.dtype) for k, v in params.items()}
    eps = 1e-8
    shifted = lambda s: {"theta": {k: v + s * eps * d[k] for k, v in params.items()}}  # noqa: E731
    fd = (learner.meta_loss(shifted(1), support, query)[0] - learner.meta_loss(shifted(-1), support, query)[0]) / (2 * eps)
    torch.testing.assert_close(sum((grads["loop"][k] * d[k]).sum() for k in params), fd, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("bn", ["transductive", "support"])
@pytest.mark.parametrize("batching,recompute", [("vmap", False), ("loop", False), ("threads", False),
                                                ("chunks", False), ("loop", True), ("threads", True)])
def test_float32_meta_gradient_is_within_1e4_of_float64_for_every_batching(batching, recompute, bn):
    """Omniglot-like drawings (mostly background, a few stroke pixels: a large mean against a small spread, where
    a one-pass variance loses its digits): the float32 meta-gradient of every task batching, per parameter
    max |error| / max |gradient| against the float64 one on the same batch (conv biases before batch norm have a
    true gradient of 0 and are left out)."""
    def grads(dtype):
        net = ConvNet(1, WAYS, channels=16, generator=torch.Generator().manual_seed(0),
                      layout="nchw" if batching in ("loop", "threads") else "channels_last").to(dtype)
        g = torch.Generator().manual_seed(1)
        draw = lambda n: (torch.rand(3, n, 1, 28, 28, generator=g, dtype=torch.float64) > 0.08).to(dtype)  # noqa: E731
        (sx, qx), sy, qy = (draw(WAYS), draw(5 * WAYS)), torch.arange(WAYS).repeat(3, 1), torch.arange(WAYS).repeat(3, 5)
        learner = MAML(SupervisedObjective(net, "cross_entropy"), parameters_of(net), inner_lr=0.4, inner_steps=1,
                       executor=TaskExecutor(batching, chunk_size=2, recompute=recompute))
        query = (qx, qy, sx) if bn == "support" else (qx, qy)
        return learner.meta_gradient(learner.init_meta_params(), (sx, sy), query)[0]["theta"]

    g32, g64 = grads(torch.float32), grads(torch.float64)
    errors = {k: float((g32[k].double() - g64[k]).abs().max() / g64[k].abs().max()) for k in g64
              if not k.endswith("conv.bias")}
    worst = sorted(errors.items(), key=lambda kv: -kv[1])[:3]
    if worst[0][1] >= 1e-4:
        pytest.fail(f"float32 meta-gradient off its float64 one: {worst}")
