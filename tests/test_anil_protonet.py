"""ANIL (the inner loop on the head only) and Prototypical Networks (the head from the support set's class means):
each an algorithm file plus a registry line, on the shared protocol, executor, objective and trainer. Float64
meta-gradients against finite differences; what each adapts; both through the trainer."""
import json

import pytest
import torch
import torch.nn.functional as F

from metarl.algorithms import ALGORITHMS
from metarl.algorithms.anil import build as build_anil
from metarl.algorithms.protonet import PrototypicalNetworks
from metarl.core.executor import TaskExecutor
from metarl.nets import parameters_of
from metarl.nets.convnet import ConvNet
from metarl.run.config import Config, from_dict
from metarl.supervised.objective import SupervisedObjective

WAYS, SIDE = 3, 16


def conv_problem(tasks=2, shots=2, query=2, seed=0):
    net = ConvNet(1, WAYS, channels=4, image_size=SIDE, generator=torch.Generator().manual_seed(seed)).double()
    g = torch.Generator().manual_seed(seed + 1)
    images = lambda n: torch.rand(tasks, WAYS * n, 1, SIDE, SIDE, generator=g, dtype=torch.float64)  # noqa: E731
    labels = lambda n: torch.arange(WAYS).repeat(n).expand(tasks, -1).contiguous()  # noqa: E731
    return net, (images(shots), labels(shots)), (images(query), labels(query))


def fd_check(learner, meta, support, query, group="theta", eps=1e-6, rtol=1e-5):
    grads = learner.meta_gradient(meta, support, query)[0][group]
    g = torch.Generator().manual_seed(7)
    d = {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in meta[group].items()}
    shifted = lambda s: {**meta, group: {k: v + s * eps * d[k] for k, v in meta[group].items()}}  # noqa: E731
    fd = (learner.meta_loss(shifted(1), support, query)[0] - learner.meta_loss(shifted(-1), support, query)[0]) / (2 * eps)
    torch.testing.assert_close(sum((grads[k] * d[k]).sum() for k in d), fd, rtol=rtol, atol=1e-10)
    return grads


def anil(net, first_order=False, executor=None):
    cfg = from_dict(Config, {"task": {"name": "Omniglot"}, "model": {"arch": "conv"},
                             "learner": {"algo": "anil", "inner_lr": 0.5, "inner_steps": 2, "first_order": first_order}})
    return build_anil(cfg, SupervisedObjective(net, "cross_entropy"), net, parameters_of(net), executor)


@pytest.mark.parametrize("batching", ["vmap", "loop"])
def test_anil_adapts_the_head_only_and_its_second_order_meta_gradient_matches_finite_differences(batching):
    net, support, query = conv_problem()
    learner = anil(net, executor=TaskExecutor(batching))
    meta = learner.init_meta_params()
    adapted = learner.adapt_path(meta, support, 2)[-1]
    for k, v in meta["theta"].items():
        moved = (adapted[k] - v).abs().amax()
        assert (moved > 0) == (k in net.head_names), k
    second = fd_check(learner, meta, support, query)
    first = anil(net, first_order=True, executor=TaskExecutor(batching)).meta_gradient(meta, support, query)[0]["theta"]
    body = [k for k in second if k not in net.head_names]
    assert max(float((second[k] - first[k]).abs().max()) for k in body) > 1e-8  # second order reaches the body


def test_prototypes_are_the_class_means_and_the_head_gives_minus_squared_distances():
    net, support, query = conv_problem(tasks=1, shots=3)
    learner = PrototypicalNetworks(SupervisedObjective(net, "cross_entropy"), parameters_of(net), net.features,
                                   net.head_names)
    meta = learner.init_meta_params()
    assert set(meta["theta"]) == {k for k in parameters_of(net) if k not in net.head_names}
    before, after = learner.adapt_path(meta, support, 2)[0], learner.adapt_path(meta, support, 2)[1]
    assert before["head.weight"].abs().max() == 0  # before the support set: every class equally likely
    p = {k: v[0] for k, v in after.items()}
    f_support = net.features(p, support[0][0])
    means = torch.stack([f_support[support[1][0] == c].mean(0) for c in range(WAYS)])
    torch.testing.assert_close(p["head.weight"], 2 * means)
    f_query = net.features(p, query[0][0])
    distances = -((f_query[:, None] - means[None]) ** 2).sum(-1)
    logits = F.linear(f_query, p["head.weight"], p["head.bias"])
    torch.testing.assert_close(F.log_softmax(logits, -1), F.log_softmax(distances, -1))
    path = learner.adapt_path(meta, support, 2)
    torch.testing.assert_close(path[2]["head.weight"], path[1]["head.weight"])  # further steps change nothing


@pytest.mark.parametrize("batching", ["vmap", "threads"])
def test_protonet_meta_gradient_matches_finite_differences(batching):
    net, support, query = conv_problem()
    learner = PrototypicalNetworks(SupervisedObjective(net, "cross_entropy"), parameters_of(net), net.features,
                                   net.head_names, TaskExecutor(batching))
    grads = fd_check(learner, learner.init_meta_params(), support, query)
    assert all(v.abs().max() > 0 for k, v in grads.items() if "conv.bias" not in k)


def test_a_head_wider_than_the_task_gives_the_task_the_same_loss_and_meta_gradient():
    """Training on more ways than the test (train_ways): a test task uses the first `ways` of a wider head; its
    absent classes get probability 0, so loss and meta-gradient equal those of a head as wide as the task."""
    net, support, query = conv_problem()
    wide = ConvNet(1, WAYS + 2, channels=4, image_size=SIDE, generator=torch.Generator().manual_seed(5)).double()
    learners = [PrototypicalNetworks(SupervisedObjective(n, "cross_entropy"), parameters_of(n), n.features,
                                     n.head_names) for n in (net, wide)]
    meta = learners[0].init_meta_params()
    assert learners[1].init_meta_params()["theta"].keys() == meta["theta"].keys()
    (loss, _), (wide_loss, _) = (learner.meta_loss(meta, support, query) for learner in learners)
    torch.testing.assert_close(wide_loss, loss)
    grads = [learner.meta_gradient(meta, support, query)[0]["theta"] for learner in learners]
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k])
    head = {k: v[0] for k, v in learners[1].adapt_path(meta, support, 1)[1].items()}
    bias = head["head.bias"]
    assert torch.isinf(bias[WAYS:]).all() and torch.isfinite(bias[:WAYS]).all()


@pytest.mark.parametrize("algo,extra", [("anil", {"learner": {"algo": "anil", "inner_lr": 0.4}}),
                                        ("protonet", {"learner": {"algo": "protonet"}})])
def test_both_train_through_the_trainer_and_the_config_rules_hold(algo, extra, tmp_path):
    from metarl.core.errors import ConfigError
    from metarl.run.trainer import Trainer

    cfg = from_dict(Config, {"task": {"name": "Omniglot", "k_support": 1, "k_query": 2, "options": {"ways": 3}},
                             "model": {"arch": "conv", "channels": 8},
                             "train": {"iterations": 3, "meta_batch_size": 2, "eval_every": 0},
                             "eval": {"num_tasks": 6, "batch_size": 6, "k_query": 2, "steps": 1},
                             "log": {"wandb": "disabled", "progress": False, "console": False}, "device": "cpu",
                             "run_dir": str(tmp_path / algo), **extra})
    from envs.omniglot_data import default_data_dir

    if not (default_data_dir() / "images_background_small1.zip").is_file():
        pytest.skip("Omniglot small archives not found")
    result = Trainer(cfg.validate()).run()
    summary = json.loads((tmp_path / algo / "eval.json").read_text())
    assert result["iterations"] == 3 and summary["steps"] == [0, 1]
    if algo == "protonet":  # chance before the support set is seen
        assert summary["accuracy"]["mean"][0] == pytest.approx(1 / 3, abs=1e-6)
        with pytest.raises(ConfigError, match="learner.inner_lr is not used with learner.algo protonet"):
            from_dict(Config, {**extra, "task": {"name": "Omniglot"}, "model": {"arch": "conv"},
                               "learner": {"algo": "protonet", "inner_lr": 0.3}}).validate()
        with pytest.raises(ConfigError, match="learns supervised task families"):
            from_dict(Config, {"task": {"name": "Navigation2D"}, "learner": {"algo": "protonet"}}).validate()
    assert ALGORITHMS[algo].build.__module__ == f"metarl.algorithms.{algo}"


def test_protonet_trains_on_more_ways_than_it_tests_and_a_fixed_head_is_refused(tmp_path):
    from metarl.core.errors import ConfigError
    from metarl.run.trainer import Trainer
    from envs.omniglot_data import default_data_dir

    if not (default_data_dir() / "images_background_small1.zip").is_file():
        pytest.skip("Omniglot small archives not found")
    base = {"task": {"name": "Omniglot", "k_support": 1, "k_query": 2, "options": {"ways": 3, "train_ways": 6}},
            "model": {"arch": "conv", "channels": 8}, "train": {"iterations": 2, "meta_batch_size": 2, "eval_every": 0},
            "eval": {"num_tasks": 6, "batch_size": 6, "k_query": 2, "steps": 1},
            "log": {"wandb": "disabled", "progress": False, "console": False}, "device": "cpu"}
    cfg = from_dict(Config, {**base, "learner": {"algo": "protonet"}, "run_dir": str(tmp_path / "p")})
    Trainer(cfg.validate()).run()
    summary = json.loads((tmp_path / "p" / "eval.json").read_text())
    assert summary["accuracy"]["mean"][1] > 1 / 3  # 3-way test tasks on the 6-wide head: above their chance
    maml = from_dict(Config, {**base, "learner": {"algo": "maml"}, "run_dir": str(tmp_path / "m")})
    with pytest.raises(ConfigError, match="a fixed head cannot learn them: learner.algo protonet"):
        Trainer(maml.validate()).run()

