"""Plain nn.Modules used through `torch.func.functional_call`: their own weights only give initial values."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

Params = dict[str, torch.Tensor]


class MLP(nn.Sequential):
    """Fully connected network with ReLU hidden layers (the MAML paper's regressor is MLP(1, [40, 40], 1))."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, generator: torch.Generator | None = None,
                 input_scale: float = 1.0):
        layers: list[nn.Module] = [Scale(input_scale)] if input_scale != 1.0 else []
        dims = [in_dim, *hidden]
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], out_dim))
        super().__init__(*layers)
        if generator is not None:
            reinit_(self, generator)


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
