"""Task batching strategies (vmap, a per-task loop, vmapped chunks, the loop on task threads) and the conv net's two
layouts give the same adaptation and the same meta-gradient (float64); auto picks task threads for conv nets on CPU."""
import threading
import time

import pytest
import torch
from test_maml import float64_default  # noqa: F401 (an autouse fixture: float64 here too)
from torch import nn

from metarl.algorithms.lstm import LSTMMetaLearner
from metarl.algorithms.maml import MAML
from metarl.algorithms.reptile import Reptile
from metarl.core.executor import TaskExecutor, map_tasks
from metarl.nets import parameters_of
from metarl.nets.convnet import ConvNet
from metarl.nets.mlp import MLP
from metarl.supervised.objective import SupervisedObjective


def flat(tree):
    return torch.cat([t.reshape(-1) for g in tree.values() for t in g.values()])


def mlp_case(learner_cls=MAML, executor=None, **kw):
    g = torch.Generator().manual_seed(0)
    model = MLP(1, [8, 8], 1, generator=g)
    model[1], model[3] = nn.Tanh(), nn.Tanh()
    data = lambda: (torch.randn(5, 6, 1, generator=g), torch.randn(5, 6, 1, generator=g))  # noqa: E731
    return learner_cls(SupervisedObjective(model), parameters_of(model), executor=executor, **kw), data(), data()


def conv_case(layout, executor=None, **kw):
    g = torch.Generator().manual_seed(0)
    model = ConvNet(1, 3, channels=4, image_size=16, generator=torch.Generator().manual_seed(1), layout=layout)
    support = (torch.rand(4, 3, 1, 16, 16, generator=g), torch.arange(3).repeat(4, 1))
    query = (torch.rand(4, 6, 1, 16, 16, generator=g), torch.arange(3).repeat(4, 2))
    learner = MAML(SupervisedObjective(model, "cross_entropy"), parameters_of(model), inner_lr=0.3, inner_steps=2,
                   executor=executor, **kw)
    return learner, support, query


@pytest.mark.parametrize("make", [
    lambda ex: mlp_case(inner_lr=0.1, inner_steps=2, learn_inner_lr=True, step_loss_weights=(1.0, 2.0), executor=ex),
    lambda ex: mlp_case(inner_lr=0.1, inner_steps=2, first_order=True, executor=ex),
    lambda ex: mlp_case(LSTMMetaLearner, inner_steps=2, first_order=False, executor=ex),
    lambda ex: mlp_case(Reptile, inner_lr=0.1, inner_steps=3, executor=ex),
], ids=["meta-sgd", "fomaml", "lstm", "reptile"])
def test_every_batching_gives_the_same_meta_gradient_and_adaptation(make):
    results = {}
    for batching in ("vmap", "loop", "chunks", "threads"):
        learner, support, query = make(TaskExecutor(batching, chunk_size=2))
        meta = learner.init_meta_params()
        grads, loss, metrics = learner.meta_gradient(meta, support, query)
        path = learner.adapt_path(meta, support, 3)
        results[batching] = (flat(grads), loss, torch.cat([torch.cat([v.reshape(-1) for v in p.values()]) for p in path]))
    for batching in ("loop", "chunks", "threads"):
        for a, b in zip(results["vmap"], results[batching]):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    assert results["vmap"][0].abs().max() > 0


def test_conv_layouts_and_batchings_agree_and_match_finite_differences():
    ref_learner, support, query = conv_case("channels_last")
    meta = ref_learner.init_meta_params()
    ref = flat(ref_learner.meta_gradient(meta, support, query)[0])
    for layout, batching in (("nchw", "loop"), ("nchw", "threads"), ("channels_last", "loop"), ("channels_last", "chunks")):
        learner = conv_case(layout, TaskExecutor(batching, chunk_size=3))[0]
        torch.testing.assert_close(flat(learner.meta_gradient(meta, support, query)[0]), ref, rtol=1e-8, atol=1e-10)
    # and the loop with plain convolutions is the derivative of the loss (one random direction)
    learner = conv_case("nchw", TaskExecutor("loop"))[0]
    gen = torch.Generator().manual_seed(2)
    d = {g: {k: torch.randn(v.shape, generator=gen) for k, v in grp.items()} for g, grp in meta.items()}
    eps = 1e-8  # ReLU / max-pool kinks lie within 1e-7 of this point here: a larger step straddles them
    shifted = lambda s: {g: {k: v + s * eps * d[g][k] for k, v in grp.items()} for g, grp in meta.items()}  # noqa: E731
    fd = (learner.meta_loss(shifted(1), support, query)[0] - learner.meta_loss(shifted(-1), support, query)[0]) / (2 * eps)
    torch.testing.assert_close((ref * flat(d)).sum(), fd, rtol=1e-5, atol=1e-8)


def test_task_threads_run_tasks_side_by_side_in_order_on_one_torch_thread_each():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        barrier = threading.Barrier(2, timeout=10)  # only passes if two tasks run at the same time

        def task(i):
            barrier.wait()
            return i, threading.get_ident(), torch.get_num_threads(), torch.is_grad_enabled()

        with torch.no_grad():
            out = map_tasks(task, 2)
        assert [o[0] for o in out] == [0, 1] and out[0][1] != out[1][1]
        assert all(o[2] == 1 and o[3] is False for o in out)  # one intra-op thread, the caller's grad mode
        assert torch.get_num_threads() == 2
        assert map_tasks(lambda i: map_tasks(lambda j: torch.get_num_threads(), 2), 2) == [[1, 1], [1, 1]]
        ran = []

        def fails_first(i):
            if i == 0:
                raise ZeroDivisionError
            time.sleep(0.01)
            ran.append(i)

        with pytest.raises(ZeroDivisionError):
            map_tasks(fails_first, 50)
        time.sleep(0.1)
        assert len(ran) < 10  # the tasks still queued after a failure are dropped
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_auto_batching_is_task_threads_for_conv_nets_on_cpu_and_vmap_otherwise():
    from metarl.run.build import task_batching
    from metarl.run.config import Config, from_dict
    from metarl.core.errors import ConfigError

    cpu = torch.device("cpu")
    conv = from_dict(Config, {"task": {"name": "Omniglot"}, "model": {"arch": "conv"}})
    assert task_batching(conv, cpu) == "threads" and task_batching(conv, torch.device("cuda")) == "vmap"
    assert task_batching(Config(), cpu) == "vmap"
    conv.train.task_batching = "chunks"
    assert task_batching(conv, cpu) == "chunks"
    with pytest.raises(ConfigError, match="train.chunk_size is not used with train.task_batching auto"):
        from_dict(Config, {"train": {"chunk_size": 4}}).validate()


@pytest.mark.parametrize("batching", ["loop", "threads"])
def test_recomputed_inner_steps_give_the_same_second_order_meta_gradient(batching):
    for make in (lambda ex, **kw: conv_case("nchw", ex, **kw),
                 lambda ex, **kw: mlp_case(inner_lr=0.1, inner_steps=3, learn_inner_lr=True,
                                           step_loss_weights=(1.0, 0.0, 2.0), executor=ex, **kw)):
        learner, support, query = make(TaskExecutor(batching))
        meta = learner.init_meta_params()
        plain = flat(learner.meta_gradient(meta, support, query)[0])
        recomputed = flat(make(TaskExecutor(batching, recompute=True))[0].meta_gradient(meta, support, query)[0])
        torch.testing.assert_close(recomputed, plain, rtol=1e-10, atol=1e-12)
        # and it is still second order: first order differs
        first = make(TaskExecutor(batching, recompute=True), first_order=True)[0]
        assert (flat(first.meta_gradient(meta, support, query)[0]) - plain).abs().max() > 1e-4


def test_recomputed_inner_steps_need_one_task_at_a_time():
    from metarl.run.build import build
    from metarl.run.config import Config, from_dict
    from metarl.core.errors import ConfigError

    cfg = from_dict(Config, {"task": {"name": "Sinusoid"}, "train": {"recompute_inner_steps": True}})
    with pytest.raises(ConfigError, match="recompute_inner_steps needs .* loop or threads"):
        build(cfg.validate())
    cfg.train.task_batching = "loop"
    assert build(cfg.validate()).learner.executor.recompute


def test_recomputed_20way_5step_maml_holds_at_most_half_the_memory():
    """Peak memory of one task's second-order meta-gradient, measured in fresh processes (bench_omniglot.py)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from bench_omniglot import peak_memory

    plain = peak_memory(mode="second_order", ways=20, steps=5, tasks=1)["peak_mb"]
    recomputed = peak_memory(mode="recompute", ways=20, steps=5, tasks=1)["peak_mb"]
    assert recomputed <= 0.5 * plain, (recomputed, plain)
