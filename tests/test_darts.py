"""Architecture search (learner.algo darts): the architecture gradient through the lookahead step against
finite differences (float64), first order differing from it, and the derived cell."""
import pytest
import torch
from test_maml import float64_default  # noqa: F401 (an autouse fixture: float64 here too)

from metarl.nets.cells import OPS, CellNetwork, derive_genotype, edges, format_genotype, parse_genotype
from metarl.algorithms.darts import ArchitectureSearch
from metarl.nets import parameters_of
from metarl.supervised.objective import SupervisedObjective


def case(first_order=False):
    g = torch.Generator().manual_seed(0)
    net = CellNetwork(1, 3, channels=3, cells=1, nodes=2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        net.alphas.copy_(torch.randn(net.alphas.shape, generator=g))
    learner = ArchitectureSearch(SupervisedObjective(net, "cross_entropy"), parameters_of(net), inner_lr=0.5,
                                 first_order=first_order)
    train = (torch.rand(1, 6, 1, 8, 8, generator=g), torch.arange(3).repeat(1, 2))
    val = (torch.rand(1, 6, 1, 8, 8, generator=g), torch.arange(3).repeat(1, 2))
    return learner, train, val


def test_second_order_architecture_gradient_matches_finite_differences_through_the_lookahead():
    learner, train, val = case()
    meta = learner.init_meta_params()
    got = learner.meta_gradient(meta, train, val)[0]["arch"]["alphas"]
    obj = learner.objective

    def val_after_lookahead(alphas):
        w = {k: v.clone().requires_grad_() for k, v in meta["theta"].items()}
        g = torch.autograd.grad(obj.inner_loss({**w, "alphas": alphas}, (train[0][0], train[1][0])), list(w.values()))
        ahead = {k: w[k] - 0.5 * d for k, d in zip(w, g)}
        return obj.inner_loss({**ahead, "alphas": alphas}, (val[0][0], val[1][0]))

    direction = torch.randn(got.shape, generator=torch.Generator().manual_seed(2))
    eps = 1e-7
    a = meta["arch"]["alphas"]
    fd = (val_after_lookahead(a + eps * direction) - val_after_lookahead(a - eps * direction)) / (2 * eps)
    torch.testing.assert_close((got * direction).sum(), fd, rtol=1e-5, atol=1e-10)
    first = ArchitectureSearch(learner.objective, learner._init, 0.5, first_order=True)
    assert (first.meta_gradient(meta, train, val)[0]["arch"]["alphas"] - got).abs().max() > 1e-6
    # the weights move along their training gradient
    w = {k: v.clone().requires_grad_() for k, v in meta["theta"].items()}
    expected = torch.autograd.grad(obj.inner_loss({**w, "alphas": a}, (train[0][0], train[1][0])), list(w.values()))
    grads = learner.meta_gradient(meta, train, val)[0]["theta"]
    for k, e in zip(w, expected):
        torch.testing.assert_close(grads[k], e, rtol=1e-10, atol=1e-12)


def test_the_derived_cell_keeps_each_nodes_strongest_non_zero_edges():
    nodes = 3
    alphas = torch.full((len(edges(nodes)), len(OPS)), -5.0)
    strongest = {(0, 1): "skip", (0, 2): "sep_conv_5x5", (1, 2): "max_pool_3x3", (0, 3): "avg_pool_3x3",
                 (2, 3): "sep_conv_3x3"}
    for e, (i, j) in enumerate(edges(nodes)):
        alphas[e, OPS.index("zero")] = 10.0  # zero is never chosen, however strong
        if (i, j) in strongest:
            alphas[e, OPS.index(strongest[(i, j)])] = 3.0 if (i, j) != (0, 3) else 1.0
    genotype = derive_genotype(alphas, nodes)
    assert genotype == [(0, 1, "skip"), (0, 2, "sep_conv_5x5"), (1, 2, "max_pool_3x3"), (0, 3, "avg_pool_3x3"),
                        (2, 3, "sep_conv_3x3")]
    assert parse_genotype(format_genotype(genotype)) == genotype
    net = CellNetwork(1, 4, channels=4, cells=2, nodes=nodes, genotype=format_genotype(genotype))
    assert not hasattr(net, "alphas") and net(torch.rand(5, 1, 28, 28)).shape == (5, 4)
    for bad in ("0-1", "1-1:skip", "0-1:conv_7x7"):
        with pytest.raises(ValueError, match="genotype item"):
            parse_genotype(bad)


def test_config_checks_architecture_search():
    from metarl.run.config import Config, from_dict
    from metarl.core.errors import ConfigError

    task = {"name": "NoisyOmniglot"}
    for cfg, message in [
        ({"task": task, "model": {"arch": "conv"}, "learner": {"algo": "darts"}}, "searches model.arch cells"),
        ({"task": task, "model": {"arch": "cells"}, "learner": {"algo": "maml"}}, "is the search network"),
        ({"task": task, "model": {"arch": "cells", "genotype": "0-1:nope"}, "learner": {"algo": "reweight"}},
         "model.genotype: genotype item"),
        ({"task": task, "model": {"arch": "conv"}, "learner": {"retrain_iterations": 5}},
         "retrain_iterations is not used with learner.algo maml"),
    ]:
        with pytest.raises(ConfigError, match=message):
            from_dict(Config, cfg).validate()


def test_one_config_searches_then_retrains_the_derived_cell(tmp_path):
    import json

    from envs.omniglot_data import default_data_dir
    from metarl.run.config import Config, from_dict
    from metarl.run.trainer import run

    if not (default_data_dir() / "images_background_small1.zip").is_file():
        pytest.skip("Omniglot archives not found")
    torch.set_default_dtype(torch.float32)
    cfg = from_dict(Config, {
        "task": {"name": "NoisyOmniglot", "k_support": 8, "k_query": 8, "options": {"classes": 10, "noise": 0.0}},
        "model": {"arch": "cells", "channels": 4, "cells": 2, "nodes": 2},
        "learner": {"algo": "darts", "inner_lr": 0.05, "retrain_iterations": 3},
        "train": {"iterations": 2, "meta_batch_size": 1, "eval_every": 0},
        "eval": {"num_tasks": 2, "steps": 0, "k_support": 1, "k_query": 4},
        "log": {"wandb": "disabled", "progress": False, "console": False}, "run_dir": str(tmp_path / "search")}).validate()
    result = run(cfg)
    genotype = json.loads((tmp_path / "search" / "genotype.json").read_text())
    assert genotype["genotype"] == result["genotype"] and len(parse_genotype(result["genotype"])) == 3
    assert result["retrain"]["iterations"] == 3 and (tmp_path / "search" / "retrain" / "eval.json").is_file()
    saved = torch.load(tmp_path / "search" / "retrain" / "checkpoint.pt", weights_only=False)
    assert "arch" not in saved["meta_params"] and saved["config"]["model"]["genotype"] == result["genotype"]
