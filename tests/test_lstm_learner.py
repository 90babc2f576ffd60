import math

import pytest
import torch

import envs
from metarl.nets.convnet import ConvNet
from metarl.algorithms.lstm import LSTMMetaLearner, preprocess
from metarl.nets import parameters_of
from metarl.nets.mlp import MLP
from metarl.supervised.objective import SupervisedObjective


def _sinusoid_learner(dtype=torch.float64, **kw):
    net = MLP(1, [16, 16], 1, generator=torch.Generator().manual_seed(0)).to(dtype)
    return LSTMMetaLearner(SupervisedObjective(net, "mse"), parameters_of(net), **kw)


def _sinusoid_episode(tasks=4, k=10, seed=0, dtype=torch.float64):
    dist = envs.SinusoidTasks(dtype=dtype)
    return dist.sample_episode(tasks, k, k, torch.Generator().manual_seed(seed))


def test_preprocessing_is_log_magnitude_and_sign():
    p = 10.0
    x = torch.tensor([1.0, -math.exp(-5), 1e-6, -1e-6, 0.0], dtype=torch.float64)
    out = preprocess(x, p)
    torch.testing.assert_close(out[0], torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(out[1], torch.tensor([-0.5, -1.0], dtype=torch.float64))
    # below e^-p: (-1, e^p x), linear and continuous through zero
    torch.testing.assert_close(out[2], torch.tensor([-1.0, math.exp(p) * 1e-6], dtype=torch.float64))
    torch.testing.assert_close(out[3], torch.tensor([-1.0, -math.exp(p) * 1e-6], dtype=torch.float64))
    torch.testing.assert_close(out[4], torch.tensor([-1.0, 0.0], dtype=torch.float64))


def test_initial_gates_keep_theta_and_take_a_small_step():
    learner = _sinusoid_learner()
    meta = learner.init_meta_params()
    assert set(meta) == {"theta", "lstm"}
    assert 4 <= float(meta["lstm"]["b_f"]) <= 6 and -5 <= float(meta["lstm"]["b_i"]) <= -4
    assert meta["lstm"]["w_x"].shape == (80, 4)  # 4 gates x hidden 20 over the 4 preprocessed inputs


def _gated(meta, forget_logit, input_logit):
    """The same meta-parameters with gate weights zeroed: constant forget / input gates."""
    lstm = {k: v.clone() for k, v in meta["lstm"].items()}
    lstm["w_f"].zero_()
    lstm["w_i"].zero_()
    lstm["b_f"].fill_(forget_logit)
    lstm["b_i"].fill_(input_logit)
    return {"theta": meta["theta"], "lstm": lstm}


def test_cell_update_is_forget_times_theta_minus_input_times_gradient():
    learner = _sinusoid_learner()
    ep = _sinusoid_episode()
    meta = learner.init_meta_params()
    # forget gate 0.5, input gate 0.1: theta_1 = 0.5 theta - 0.1 grad
    gated = _gated(meta, 0.0, math.log(0.1 / 0.9))
    one = learner.adapt_path(gated, ep.support, 1)[-1]
    for t in range(ep.num_tasks):
        data = (ep.support[0][t], ep.support[1][t])
        g = torch.func.grad(learner.objective.inner_loss)(meta["theta"], data)
        for k, v in meta["theta"].items():
            torch.testing.assert_close(one[k][t], 0.5 * v - 0.1 * g[k])
    # forget gate 1 and input gate 0.1 is plain SGD: two steps of it
    sgd = _gated(meta, 40.0, math.log(0.1 / 0.9))
    two = learner.adapt_path(sgd, ep.support, 2)[-1]
    data = (ep.support[0][0], ep.support[1][0])
    p = meta["theta"]
    for _ in range(2):
        g = torch.func.grad(learner.objective.inner_loss)(p, data)
        p = {k: p[k] - 0.1 * g[k] for k in p}
    for k in p:
        torch.testing.assert_close(two[k][0], p[k])


def test_second_order_meta_gradient_matches_finite_differences():
    learner = _sinusoid_learner(first_order=False, inner_steps=2)
    ep = _sinusoid_episode(tasks=3)
    meta = learner.init_meta_params()
    grads, _, _ = learner.meta_gradient(meta, ep.support, ep.query)
    g = torch.Generator().manual_seed(1)
    d = {grp: {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in meta[grp].items()} for grp in meta}
    eps = 1e-6

    def shifted(s):
        return {grp: {k: v + s * eps * d[grp][k] for k, v in meta[grp].items()} for grp in meta}

    fd = (learner.meta_loss(shifted(1), ep.support, ep.query)[0] - learner.meta_loss(shifted(-1), ep.support, ep.query)[0]) / (2 * eps)
    analytic = sum((grads[grp][k] * d[grp][k]).sum() for grp in meta for k in meta[grp])
    torch.testing.assert_close(analytic, fd, rtol=1e-6, atol=1e-9)


def test_first_order_drops_second_derivatives_but_trains_every_gate():
    ep = _sinusoid_episode(tasks=3)
    first, second = _sinusoid_learner(inner_steps=2), _sinusoid_learner(inner_steps=2, first_order=False)
    meta = first.init_meta_params()
    g1 = first.meta_gradient(meta, ep.support, ep.query)[0]
    g2 = second.meta_gradient(meta, ep.support, ep.query)[0]
    assert not torch.allclose(g1["theta"]["0.weight"], g2["theta"]["0.weight"])
    for k, v in g1["lstm"].items():
        assert torch.isfinite(v).all() and v.abs().sum() > 0, k


def test_meta_training_lowers_the_adapted_loss_on_sinusoids():
    learner = _sinusoid_learner(dtype=torch.float32, inner_steps=3)
    dist = envs.SinusoidTasks()
    held_out = dist.sample_episode(100, 10, 10, torch.Generator().manual_seed(99), "test")
    meta = learner.init_meta_params()
    before = float(learner.meta_loss(meta, held_out.support, held_out.query)[0])
    leaves = [t.requires_grad_() for grp in meta.values() for t in grp.values()]
    opt = torch.optim.Adam(leaves, lr=0.01)
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        ep = dist.sample_episode(8, 10, 10, gen)
        grads, _, _ = learner.meta_gradient(meta, ep.support, ep.query)
        for grp in meta:
            for k, t in meta[grp].items():
                t.grad = grads[grp][k]
        opt.step()
    with torch.no_grad():
        after = float(learner.meta_loss(meta, held_out.support, held_out.query)[0])
    assert after < 0.85 * before, (before, after)  # measured: 5.00 -> 3.85


def test_runs_on_the_conv_learner_for_classification():
    net = ConvNet(1, 5, channels=8, image_size=16, generator=torch.Generator().manual_seed(0))
    learner = LSTMMetaLearner(SupervisedObjective(net, "cross_entropy"), parameters_of(net), inner_steps=2)
    g = torch.Generator().manual_seed(0)
    support = (torch.rand(2, 5, 1, 16, 16, generator=g), torch.arange(5).expand(2, 5))
    query = (torch.rand(2, 10, 1, 16, 16, generator=g), torch.arange(5).repeat(2).expand(2, 10))
    meta = learner.init_meta_params()
    path = learner.adapt_path(meta, support, 3)
    assert len(path) == 4 and path[3]["head.weight"].shape == (2, 5, 8)
    grads, loss, metrics = learner.meta_gradient(meta, support, query)
    assert torch.isfinite(loss) and "accuracy" in metrics
    assert all(torch.isfinite(v).all() for grp in grads.values() for v in grp.values())


def test_bad_arguments_are_rejected_with_the_config():
    from metarl.core.errors import ConfigError
    from metarl.run.config import Config, from_dict

    for learner, message in (({"inner_steps": 0}, "learner.inner_steps must be positive"),
                             ({"lstm_hidden": 0}, "learner.lstm_hidden must be positive"),
                             ({"inner_lr": 0.3}, "learner.inner_lr is not used with learner.algo lstm")):
        with pytest.raises(ConfigError, match=message):
            from_dict(Config, {"learner": {"algo": "lstm", **learner}}).validate()
