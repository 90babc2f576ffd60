"""Learned example weights (learner.algo reweight): the weights and meta-gradients against closed forms and
finite differences (float64), and the noisy-label Omniglot data they are for."""
import pytest
import torch
from test_maml import float64_default  # noqa: F401 (an autouse fixture: float64 here too)
from torch import nn

from envs.omniglot_data import default_data_dir
from metarl.algorithms.reweight import ExampleReweighting
from metarl.nets import parameters_of
from metarl.supervised.objective import SupervisedObjective

HAS_OMNIGLOT = (default_data_dir() / "images_background_small1.zip").is_file()


def case(weighting, lr=0.3):
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))
    for p in model.parameters():
        p.data = torch.randn(p.shape, generator=g)
    objective = SupervisedObjective(model, "cross_entropy")
    learner = ExampleReweighting(objective, parameters_of(model), weighting, inner_lr=lr,
                                 weight_net_hidden=7, generator=torch.Generator().manual_seed(1))
    train = (torch.randn(1, 8, 5, generator=g), torch.randint(3, (1, 8), generator=g))
    val = (torch.randn(1, 4, 5, generator=g), torch.randint(3, (1, 4), generator=g))
    return learner, objective, train, val


def flat(grads):
    return torch.cat([g.reshape(-1) for g in grads])


def test_l2rw_weighs_each_example_by_its_gradients_agreement_with_the_validation_gradient():
    learner, objective, (tx, ty), (vx, vy) = case("l2rw")
    meta = learner.init_meta_params()
    theta = {k: v.clone().requires_grad_() for k, v in meta["theta"].items()}
    g_val = flat(torch.autograd.grad(objective.inner_loss(theta, (vx[0], vy[0])), list(theta.values())))
    agreement = torch.stack([flat(torch.autograd.grad(l, list(theta.values()), retain_graph=True)) @ g_val
                             for l in objective.example_losses(theta, (tx[0], ty[0]))])
    w = torch.clamp(0.3 * agreement, min=0)
    assert 0 < int((w > 0).sum()) < 8  # some examples are trusted, some are not
    w = w / w.sum()
    expected = torch.autograd.grad((w * objective.example_losses(theta, (tx[0], ty[0]))).sum(), list(theta.values()))
    got = learner.meta_gradient(meta, (tx, ty), (vx, vy))[0]["theta"]
    torch.testing.assert_close(flat(got.values()), flat(expected), rtol=1e-9, atol=1e-12)


def test_plain_weighting_is_the_gradient_of_the_mean_training_loss():
    learner, objective, (tx, ty), (vx, vy) = case("none")
    meta = learner.init_meta_params()
    theta = {k: v.clone().requires_grad_() for k, v in meta["theta"].items()}
    expected = torch.autograd.grad(objective.inner_loss(theta, (tx[0], ty[0])), list(theta.values()))
    got = learner.meta_gradient(meta, (tx, ty), (vx, vy))[0]["theta"]
    torch.testing.assert_close(flat(got.values()), flat(expected), rtol=1e-10, atol=1e-12)


def test_meta_weight_net_gradient_matches_finite_differences_of_the_lookahead_validation_loss():
    learner, objective, (tx, ty), (vx, vy) = case("mwn")
    meta = learner.init_meta_params()
    got = learner.meta_gradient(meta, (tx, ty), (vx, vy))[0]["weight_net"]

    def val_after_lookahead(psi):
        theta = {k: v.clone().requires_grad_() for k, v in meta["theta"].items()}
        losses = objective.example_losses(theta, (tx[0], ty[0]))
        w = learner.example_weights(psi, losses.detach())
        g = torch.autograd.grad((w * losses).mean(), list(theta.values()))
        return objective.inner_loss({k: theta[k] - 0.3 * d for k, d in zip(theta, g)}, (vx[0], vy[0]))

    eps = 1e-4  # the directional derivatives are ~1e-5: at 1e-6 the loss's rounding alone is ~1e-4 of them
    for name, value in meta["weight_net"].items():
        direction = torch.randn(value.shape, generator=torch.Generator().manual_seed(3))
        shifted = lambda s: {**meta["weight_net"], name: value + s * eps * direction}  # noqa: E731
        fd = (val_after_lookahead(shifted(1)) - val_after_lookahead(shifted(-1))) / (2 * eps)
        torch.testing.assert_close((got[name] * direction).sum(), fd, rtol=1e-5, atol=1e-10)


def test_config_checks_reweighting():
    from metarl.run.config import Config, from_dict
    from metarl.core.errors import ConfigError

    for cfg, message in [
        ({"task": {"name": "Navigation2D"}, "learner": {"algo": "reweight"}}, "learner.algo reweight learns supervised task families"),
        ({"learner": {"algo": "reweight", "inner_steps": 3}}, "learner.inner_steps is not used with learner.algo reweight"),
        ({"learner": {"algo": "reweight", "weight_net_hidden": 5}}, "weight_net_hidden is not used with learner.weighting l2rw"),
        ({"learner": {"weighting": "mwn"}}, "learner.weighting is not used with learner.algo maml"),
    ]:
        with pytest.raises(ConfigError, match=message):
            from_dict(Config, cfg).validate()


@pytest.mark.skipif(not HAS_OMNIGLOT, reason="Omniglot archives not found")
def test_noisy_omniglot_corrupts_a_fixed_fraction_of_training_labels_only():
    import envs

    d = envs.make_distribution("NoisyOmniglot", classes=50, noise=0.4, split_seed=3)
    again = envs.make_distribution("NoisyOmniglot", classes=50, noise=0.4, split_seed=3)
    assert torch.equal(d.train_y, again.train_y) and abs(d.corrupted_fraction - 0.4) < 0.05
    wrong = d.train_y != d.clean_y
    assert bool((d.train_y[wrong] != d.clean_y[wrong]).all()) and int(d.train_y.max()) < 50
    g = torch.Generator().manual_seed(0)
    (sx, sy), (qx, qy) = d.sample_support_query(d.sample(2, g, "train"), 16, 8, g, "train")
    assert sx.shape == (2, 16, 1, 28, 28) and qy.shape == (2, 8)
    # validation and test labels are the true classes: one validation drawing and four test drawings each
    assert torch.equal(d.val_y, torch.arange(50)) and torch.equal(d.test_y, torch.arange(50).repeat_interleave(4))
    tail = envs.make_distribution("NoisyOmniglot", classes=50, noise=0.0, imbalance=0.1)
    counts = torch.bincount(tail.train_y, minlength=50)
    assert counts[0] == 15 and counts[-1] == 2 and bool((counts[:-1] >= counts[1:]).all())
    assert tail.corrupted_fraction == 0.0
