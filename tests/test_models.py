"""The MLP's options (activation, residual blocks, LayerNorm): forward against hand-written computations, and
second-order MAML / Meta-SGD meta-gradients through them against float64 finite differences."""
import pytest
import torch
import torch.nn.functional as F

from metarl.run.config import Config
from metarl.core.errors import ConfigError
from metarl.algorithms.maml import MAML
from metarl.nets import ACTIVATIONS, parameters_of
from metarl.nets.mlp import MLP
from metarl.supervised.objective import SupervisedObjective
from test_maml import fd_gradient, flat, float64_default  # noqa: F401 (an autouse fixture: float64 here too)

HAND_ACT = {
    "relu": lambda z: torch.clamp(z, min=0),
    "tanh": lambda z: (torch.exp(z) - torch.exp(-z)) / (torch.exp(z) + torch.exp(-z)),
    "silu": lambda z: z / (1 + torch.exp(-z)),
    "gelu": lambda z: 0.5 * z * (1 + torch.erf(z / 2**0.5)),
    "softplus": lambda z: torch.log1p(torch.exp(z)),
}


def layer_norm(h, gain, bias, eps=1e-5):
    mu = h.mean(-1, keepdim=True)
    var = ((h - mu) ** 2).mean(-1, keepdim=True)
    return (h - mu) / torch.sqrt(var + eps) * gain + bias


def randomise_(model, seed=3):
    """Random values for every parameter (LayerNorm gains/biases start at 1/0, which would hide mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.7)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_plain_mlp_forward_matches_hand_written_for_every_activation(activation):
    model = MLP(1, [6, 5], 2, generator=torch.Generator().manual_seed(0), input_scale=0.2, activation=activation)
    p = dict(model.named_parameters())
    x = torch.linspace(-5, 5, 11).unsqueeze(-1)
    act = HAND_ACT[activation]
    h = act(0.2 * x @ p["1.weight"].T + p["1.bias"])
    h = act(h @ p["3.weight"].T + p["3.bias"])
    torch.testing.assert_close(model(x), h @ p["5.weight"].T + p["5.bias"])


def test_default_mlp_is_relu_and_keeps_its_parameter_names():
    model = MLP(1, [40, 40], 1)
    assert [type(m).__name__ for m in model] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert list(dict(model.named_parameters())) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    assert Config().model.activation == "relu" and not Config().model.residual and Config().model.norm == "none"


def test_residual_layer_norm_forward_matches_hand_written():
    model = MLP(1, [5, 5, 5], 1, generator=torch.Generator().manual_seed(0), input_scale=0.2, activation="silu",
                residual=True, norm="layer")
    randomise_(model)
    p = dict(model.named_parameters())
    x = torch.linspace(-5, 5, 13).unsqueeze(-1)
    act = HAND_ACT["silu"]
    h = act(0.2 * x @ p["1.weight"].T + p["1.bias"])  # the first hidden layer changes width: plain
    for i in (3, 4):  # two residual blocks: h + act(W LN(h) + b)
        n = layer_norm(h, p[f"{i}.body.0.weight"], p[f"{i}.body.0.bias"])
        h = h + act(n @ p[f"{i}.body.1.weight"].T + p[f"{i}.body.1.bias"])
    torch.testing.assert_close(model(x), h @ p["5.weight"].T + p["5.bias"])


def test_residual_without_norm_and_norm_without_residual_match_hand_written():
    x = torch.linspace(-1, 1, 7).unsqueeze(-1)
    res = MLP(1, [4, 4, 3], 1, generator=torch.Generator().manual_seed(0), activation="tanh", residual=True)
    randomise_(res)
    p = dict(res.named_parameters())
    h = torch.tanh(x @ p["0.weight"].T + p["0.bias"])
    h = h + torch.tanh(h @ p["2.body.0.weight"].T + p["2.body.0.bias"])  # 4 -> 4: residual
    h = torch.tanh(h @ p["3.weight"].T + p["3.bias"])  # 4 -> 3: width changes, plain
    torch.testing.assert_close(res(x), h @ p["5.weight"].T + p["5.bias"])

    normed = MLP(1, [4, 4], 1, generator=torch.Generator().manual_seed(0), activation="gelu", norm="layer")
    randomise_(normed)
    p = dict(normed.named_parameters())
    h = F.gelu(layer_norm(x @ p["0.weight"].T + p["0.bias"], p["1.weight"], p["1.bias"]))
    h = F.gelu(layer_norm(h @ p["3.weight"].T + p["3.bias"], p["4.weight"], p["4.bias"]))
    torch.testing.assert_close(normed(x), h @ p["6.weight"].T + p["6.bias"])


def test_gated_forward_matches_hand_written():
    x = torch.linspace(-5, 5, 9).unsqueeze(-1)
    model = MLP(1, [5, 5], 2, generator=torch.Generator().manual_seed(0), input_scale=0.2, activation="tanh", gated=True)
    randomise_(model)
    p = dict(model.named_parameters())
    h = 0.2 * x
    for i in (1, 2):
        h = torch.tanh(h @ p[f"{i}.value.weight"].T + p[f"{i}.value.bias"]) * (h @ p[f"{i}.gate.weight"].T + p[f"{i}.gate.bias"])
    torch.testing.assert_close(model(x), h @ p["3.weight"].T + p["3.bias"])
    # residual + norm + gated: h + act(value(LN(h))) * gate(LN(h)) after the first (plain gated) layer
    model = MLP(1, [5, 5], 1, generator=torch.Generator().manual_seed(0), gated=True, residual=True, norm="layer")
    randomise_(model)
    p = dict(model.named_parameters())
    h = torch.relu(x @ p["0.value.weight"].T + p["0.value.bias"]) * (x @ p["0.gate.weight"].T + p["0.gate.bias"])
    n = layer_norm(h, p["1.body.0.weight"], p["1.body.0.bias"])
    h = h + torch.relu(n @ p["1.body.1.value.weight"].T + p["1.body.1.value.bias"]) * (
        n @ p["1.body.1.gate.weight"].T + p["1.body.1.gate.bias"])
    torch.testing.assert_close(model(x), h @ p["2.weight"].T + p["2.bias"])


@pytest.mark.parametrize("activation,residual,norm,gated", [("silu", True, "layer", False),
                                                            ("softplus", False, "layer", False),
                                                            ("gelu", True, "none", False), ("tanh", False, "none", True),
                                                            ("relu", True, "layer", True)])
def test_meta_gradient_through_new_mlp_options_matches_finite_differences(activation, residual, norm, gated):
    g = torch.Generator().manual_seed(0)
    model = MLP(1, [4, 4, 4], 1, generator=g, input_scale=0.5, activation=activation, residual=residual, norm=norm,
                gated=gated)
    randomise_(model)
    support = (torch.randn(2, 4, 1, generator=g), torch.randn(2, 4, 1, generator=g))
    query = (torch.randn(2, 4, 1, generator=g), torch.randn(2, 4, 1, generator=g))
    learner = MAML(SupervisedObjective(model), parameters_of(model), inner_lr=0.05, inner_steps=2,
                   learn_inner_lr=True, inner_lr_per_step=True, learn_step_scale=True, step_loss_weights=(1.0, 1.0))
    meta = learner.init_meta_params()
    meta["log_inner_lr"] = {k: v + 0.3 * torch.randn(v.shape, generator=g) for k, v in meta["log_inner_lr"].items()}
    grads = learner.meta_gradient(meta, support, query)[0]
    # every parameter, the LayerNorm gains and biases included, gets a meta-gradient
    assert all(v.abs().max() > 0 for v in grads["theta"].values())
    torch.testing.assert_close(flat(grads), fd_gradient(learner, meta, support, query), rtol=1e-6, atol=1e-8)


def test_config_builds_the_chosen_mlp_and_rejects_unknown_names():
    from metarl.run.build import build

    cfg = Config()
    cfg.model.hidden = (8, 8, 8)
    cfg.model.activation = "tanh"
    cfg.model.residual = True
    cfg.model.norm = "layer"
    cfg.device = "cpu"
    model = build(cfg.validate()).model
    assert any(type(m).__name__ == "Residual" for m in model) and any(type(m).__name__ == "Tanh" for m in model.modules())
    assert any(type(m).__name__ == "LayerNorm" for m in model.modules())
    with pytest.raises(ValueError, match="activation"):
        MLP(1, [4], 1, activation="swish")
    with pytest.raises(ValueError, match="norm"):
        MLP(1, [4], 1, norm="batch")
    from metarl.run.config import from_dict

    with pytest.raises(ConfigError, match="model.activation"):
        from_dict(Config, {"model": {"activation": "swish"}})


def test_layer_norm_equals_torch_layer_norm_forward():
    from metarl.nets.mlp import LayerNorm

    g = torch.Generator().manual_seed(0)
    norm = LayerNorm(6)
    randomise_(norm)
    x = torch.randn(3, 4, 6, generator=g) * 3 + 1
    torch.testing.assert_close(norm(x), F.layer_norm(x, (6,), norm.weight, norm.bias, eps=1e-5))
