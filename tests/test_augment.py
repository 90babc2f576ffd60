"""Learned data augmentation (learner.augmentation): the affine transform, its meta-gradient through the inner
step against finite differences (float64), and its noise as data drawn from the run's seed."""
import pytest
import torch
from test_maml import float64_default  # noqa: F401 (an autouse fixture: float64 here too)
from torch import nn

from metarl.nets.augment import NOISE_DIMS, affine_augment
from metarl.algorithms.maml import MAML
from metarl.core.executor import TaskExecutor
from metarl.nets import parameters_of
from metarl.supervised.objective import SupervisedObjective


def images(g, *lead, side=8):
    return torch.rand(*lead, 1, side, side, generator=g)


def test_zero_magnitudes_leave_the_images_unchanged_and_others_move_them():
    g = torch.Generator().manual_seed(0)
    x, u = images(g, 6), torch.rand(6, NOISE_DIMS, generator=g) * 2 - 1
    torch.testing.assert_close(affine_augment(x, torch.zeros(4), u), x, rtol=0, atol=1e-12)
    for i in range(4):
        m = torch.zeros(4)
        m[i] = 0.3
        assert (affine_augment(x, m, u) - x).abs().max() > 1e-2, f"magnitude {i} has no effect"
    with pytest.raises(ValueError, match="noise must be shaped"):
        affine_augment(x, torch.zeros(4), u[:, :3])


def augmented_case(augmentation="learned"):
    g = torch.Generator().manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 3))
    for p in model.parameters():
        p.data = torch.randn(p.shape, generator=g) * 0.5
    learner = MAML(SupervisedObjective(model, "cross_entropy"), parameters_of(model), inner_lr=0.5, inner_steps=2,
                   augmentation=augmentation, augment_magnitudes=(0.3, 0.2, 0.1, 0.15), executor=TaskExecutor("loop"))
    noise = torch.rand(2, 3, NOISE_DIMS, generator=g) * 2 - 1
    support = (images(g, 2, 3), torch.arange(3).repeat(2, 1), noise)
    query = (images(g, 2, 6), torch.arange(3).repeat(2, 2))
    return learner, support, query


def test_the_magnitudes_meta_gradient_matches_finite_differences():
    learner, support, query = augmented_case()
    meta = learner.init_meta_params()
    grads = learner.meta_gradient(meta, support, query)[0]["augment"]["magnitudes"]
    eps = 1e-6
    for i in range(4):
        shifted = lambda s: {**meta, "augment": {"magnitudes": meta["augment"]["magnitudes"] + s * eps * torch.eye(4)[i]}}  # noqa: E731
        fd = (learner.meta_loss(shifted(1), support, query)[0] - learner.meta_loss(shifted(-1), support, query)[0]) / (2 * eps)
        torch.testing.assert_close(grads[i], fd, rtol=1e-5, atol=1e-9)
    assert grads.abs().min() > 0  # every magnitude reaches the outer loss
    # through the inner step only: with the inner step's second-order terms dropped nothing reaches them
    learner.first_order = True
    assert learner.meta_gradient(meta, support, query)[0]["augment"]["magnitudes"].abs().max() == 0


def test_fixed_augmentation_changes_the_adaptation_and_learns_nothing():
    fixed, support, query = augmented_case("fixed")
    plain, _, _ = augmented_case("none")
    assert "augment" not in fixed.init_meta_params()
    a = fixed.adapt_path(fixed.init_meta_params(), support, 2)[-1]
    b = plain.adapt_path(plain.init_meta_params(), support[:2], 2)[-1]
    assert max((a[k] - b[k]).abs().max() for k in a) > 1e-4


def omniglot_run(tmp_path, augmentation, **train):
    from metarl.run.config import Config, from_dict
    from metarl.run.trainer import Trainer

    cfg = from_dict(Config, {
        "task": {"name": "Omniglot", "k_support": 1, "k_query": 1}, "model": {"arch": "conv", "channels": 4},
        "learner": {"augmentation": augmentation}, "train": {"iterations": 2, "meta_batch_size": 2, "eval_every": 0, **train},
        "eval": {"num_tasks": 4, "k_query": 2, "steps": 1, "plot_tasks": 2},
        "log": {"wandb": "disabled", "progress": False, "console": False}, "device": "cpu",
        "run_dir": str(tmp_path / augmentation)}).validate()
    return Trainer(cfg)


def test_augmentation_noise_is_data_from_the_seed_and_keeps_the_tasks(tmp_path):
    from envs.omniglot_data import default_data_dir

    if not (default_data_dir() / "images_background_small1.zip").is_file():
        pytest.skip("Omniglot archives not found")
    learned, none = omniglot_run(tmp_path, "learned"), omniglot_run(tmp_path, "none")
    a, b = learned.source.train_batch(3, learned.learner, learned.meta)[0], none.source.train_batch(3, none.learner, none.meta)[0]
    assert len(a.support[0]) == 3 and torch.equal(a.support[0][0], b.support[0][0])  # same images, plus noise
    again = learned.source.train_batch(3, learned.learner, learned.meta)[0]
    assert torch.equal(a.support[0][2], again.support[0][2])
    result = learned.run()
    assert "augment" in learned.meta and result["eval"]["accuracy"]["mean"][1] is not None


def test_config_checks_augmentation():
    from metarl.run.config import Config, from_dict
    from metarl.core.errors import ConfigError

    for cfg, message in [
        ({"learner": {"augmentation": "learned"}}, "learner.augmentation needs an image task"),
        ({"task": {"name": "Omniglot"}, "model": {"arch": "conv"}, "learner": {"algo": "reptile", "augmentation": "fixed"}},
         "learner.augmentation is not used with learner.algo reptile"),
        ({"task": {"name": "NoisyOmniglot"}, "model": {"arch": "conv"},
          "learner": {"algo": "reweight", "weighting": "l2rw", "augmentation": "learned"}}, "needs weighting none or mwn"),
        ({"task": {"name": "Omniglot"}, "model": {"arch": "conv"}, "learner": {"augment_magnitudes": [0.1] * 4}},
         "augment_magnitudes is not used with learner.augmentation none"),
        ({"task": {"name": "Omniglot"}, "model": {"arch": "conv"},
          "learner": {"augmentation": "fixed", "augment_magnitudes": [0.1]}}, "needs 4 values"),
    ]:
        with pytest.raises(ConfigError, match=message):
            from_dict(Config, cfg).validate()


@pytest.mark.parametrize("weighting", ["none", "mwn"])
def test_reweighting_learns_the_magnitudes_through_its_lookahead_step(weighting):
    """The small-data problem's learner: d L_val(theta - alpha grad_theta L_train(theta; x under m)) / d m."""
    from metarl.nets.augment import augmented
    from metarl.algorithms.reweight import ExampleReweighting

    g = torch.Generator().manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 3))
    for p in model.parameters():
        p.data = torch.randn(p.shape, generator=g) * 0.5
    objective = SupervisedObjective(model, "cross_entropy")
    learner = ExampleReweighting(objective, parameters_of(model), weighting, inner_lr=0.4, weight_net_hidden=5,
                                 augmentation="learned", augment_magnitudes=(0.3, 0.2, 0.1, 0.15))
    train = (images(g, 1, 6), torch.arange(3).repeat(1, 2), torch.rand(1, 6, NOISE_DIMS, generator=g) * 2 - 1)
    val = (images(g, 1, 5), torch.tensor([[0, 1, 2, 0, 1]]))
    meta = learner.init_meta_params()
    got = learner.meta_gradient(meta, train, val)[0]["augment"]["magnitudes"]

    one = (train[0][0], train[1][0], train[2][0])
    # mwn's weights are values (of the detached losses), held at those of the current magnitudes
    w = learner.example_weights(meta["weight_net"], objective.example_losses(
        meta["theta"], augmented(one, meta["augment"]["magnitudes"]))) if weighting == "mwn" else 1.0

    def val_after_lookahead(m):
        theta = {k: v.clone().requires_grad_() for k, v in meta["theta"].items()}
        losses = objective.example_losses(theta, augmented(one, m))
        d = torch.autograd.grad((w * losses).mean(), list(theta.values()))
        return objective.inner_loss({k: theta[k] - 0.4 * v for k, v in zip(theta, d)}, (val[0][0], val[1][0]))

    m, eps = meta["augment"]["magnitudes"], 1e-6
    for i in range(4):
        fd = (val_after_lookahead(m + eps * torch.eye(4)[i]) - val_after_lookahead(m - eps * torch.eye(4)[i])) / (2 * eps)
        torch.testing.assert_close(got[i], fd, rtol=1e-5, atol=1e-10)
    assert got.abs().min() > 0
    # the network itself moves along the augmented training loss's gradient
    fixed = ExampleReweighting(objective, parameters_of(model), "none", augmentation="fixed",
                               augment_magnitudes=(0.3, 0.2, 0.1, 0.15))
    plain = ExampleReweighting(objective, parameters_of(model), "none")
    a = fixed.meta_gradient(fixed.init_meta_params(), train, val)[0]["theta"]
    b = plain.meta_gradient(plain.init_meta_params(), train[:2], val)[0]["theta"]
    assert "augment" not in fixed.init_meta_params() and max((a[k] - b[k]).abs().max() for k in a) > 1e-4
