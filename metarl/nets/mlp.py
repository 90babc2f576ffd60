"""The fully connected network, as a pure function of its parameters (`MLP.call`)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from metarl.nets import Params, make_activation, reinit_
from metarl.nets.functional import linear, pure

NORMS = ("none", "layer")


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """Layer normalisation over the last axis, written with elementary ops (see LayerNorm)."""
    centred = x - x.mean(-1, keepdim=True)
    var = (centred * centred).mean(-1, keepdim=True)
    return centred * torch.rsqrt(var + eps) * weight + bias


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
        self._call = pure(self)
        #: the parameters of the output layer (what ANIL adapts)
        self.head_names = (f"{len(self) - 1}.weight", f"{len(self) - 1}.bias")

    def call(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """forward() as a pure function of a parameter dict (the module's own weights are not read)."""
        return self._call(params, x)


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

    def pure(self, prefix: str):
        value, gate = linear(prefix + "value."), linear(prefix + "gate.")
        return lambda p, x: self.act(value(p, x)) * gate(p, x)


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
        return layer_norm(x, self.weight, self.bias, self.eps)

    def pure(self, prefix: str):
        return lambda p, x: layer_norm(x, p[prefix + "weight"], p[prefix + "bias"], self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class Residual(nn.Module):
    """x -> x + body(x)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)

    def pure(self, prefix: str):
        body = pure(self.body, prefix + "body.")
        return lambda p, x: x + body(p, x)


class Scale(nn.Module):
    """Multiplies its input by a fixed constant (input normalisation; no parameters)."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"



