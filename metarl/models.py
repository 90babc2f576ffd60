"""Plain nn.Modules used through `torch.func.functional_call`: their own weights only give initial values."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

Params = dict[str, torch.Tensor]


ACTIVATIONS = ("relu", "tanh", "silu", "gelu", "softplus")
NORMS = ("none", "layer")


def make_activation(name: str) -> nn.Module:
    """The hidden-layer nonlinearity by name (one of ACTIVATIONS)."""
    table = {"relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU, "gelu": nn.GELU, "softplus": nn.Softplus}
    if name not in table:
        raise ValueError(f"unknown activation {name!r}: expected one of {', '.join(ACTIVATIONS)}")
    return table[name]()


class MLP(nn.Sequential):
    """Fully connected network (the MAML paper's regressor is MLP(1, [40, 40], 1), ReLU).

    Plain (default): x -> [Scale] -> (Linear -> act) per hidden width -> Linear.
    residual=True: every hidden layer whose input and output widths agree becomes a pre-activation residual
    block h -> h + act(Linear(norm(h))) (`Residual`); the first hidden layer (and any change of width) stays
    Linear -> act. norm="layer" puts a LayerNorm (learned gain and bias, adapted like every other parameter)
    before the Linear of each residual block, or, without residual, after the Linear of each hidden layer
    (Linear -> LayerNorm -> act; with gated, after the gated layer). gated=True replaces each hidden
    Linear -> act by `Gated`: act(Linear_v(h)) * Linear_g(h).
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, generator: torch.Generator | None = None,
                 input_scale: float = 1.0, activation: str = "relu", residual: bool = False, norm: str = "none",
                 gated: bool = False):
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}: expected one of {', '.join(NORMS)}")
        make_activation(activation)  # validates the name before any layer is built

        def unit(a: int, b: int) -> list[nn.Module]:  # one hidden layer's map a -> b, ending in the nonlinearity
            if gated:
                return [Gated(a, b, make_activation(activation))]
            return [nn.Linear(a, b), make_activation(activation)]

        layers: list[nn.Module] = [Scale(input_scale)] if input_scale != 1.0 else []
        dims = [in_dim, *hidden]
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            if residual and i > 0 and a == b:
                block = [LayerNorm(a)] if norm == "layer" else []
                layers.append(Residual(nn.Sequential(*block, *unit(a, b))))
            else:
                first, *rest = unit(a, b)
                layers.append(first)
                if norm == "layer" and not residual:
                    layers.append(LayerNorm(b))
                layers += rest
        layers.append(nn.Linear(dims[-1], out_dim))
        super().__init__(*layers)
        if generator is not None:
            reinit_(self, generator)


class Gated(nn.Module):
    """Gated hidden layer: x -> act(value(x)) * gate(x), two Linear maps a -> b (a GLU with any activation).
    The product makes an inner step's change of the output bilinear in the changes of the two maps."""

    def __init__(self, a: int, b: int, act: nn.Module):
        super().__init__()
        self.value = nn.Linear(a, b)
        self.gate = nn.Linear(a, b)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.value(x)) * self.gate(x)


class LayerNorm(nn.Module):
    """Layer normalisation over the last axis with a learned gain and bias, written with elementary ops.

    Not nn.LayerNorm: in torch 2.13, grad(vmap(grad(loss))) through F.layer_norm with unbatched (closed-over)
    parameters and vmapped data -- exactly MAML's meta-gradient -- disagrees with the mean of the per-task
    grad(grad(loss)) by up to ~5e-2 in float64, so the second-order meta-gradient is wrong (the
    finite-difference test in tests/test_models.py fails with nn.LayerNorm); this formulation passes it."""

    def __init__(self, width: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(-1, keepdim=True)
        var = (centred * centred).mean(-1, keepdim=True)
        return centred * torch.rsqrt(var + self.eps) * self.weight + self.bias

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class Residual(nn.Module):
    """x -> x + body(x)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Scale(nn.Module):
    """Multiplies its input by a fixed constant (input normalisation; no parameters)."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


def reinit_(module: nn.Module, generator: torch.Generator) -> None:
    """Re-draw the weights of every Linear / Conv layer from `generator` (PyTorch's default law),
    so a model's initial parameters depend on an explicit seed, not the global RNG."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                bound = 1.0 / fan_in**0.5
                m.weight.copy_(torch.rand(m.weight.shape, generator=generator) * 2 * bound - bound)
                if m.bias is not None:
                    m.bias.copy_(torch.rand(m.bias.shape, generator=generator) * 2 * bound - bound)


def parameters_of(module: nn.Module, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> Params:
    """A detached copy of a module's parameters as a plain dict (the meta-parameters' initial values)."""
    return {k: v.detach().to(device=device, dtype=dtype).clone() for k, v in module.named_parameters()}
