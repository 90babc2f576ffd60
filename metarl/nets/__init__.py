"""Networks as pure functions of parameter dicts: each is an nn.Module only for its initial values and parameter
names; `net.call(params, x)` computes it from a dict of tensors (per task, under vmap or on task threads:
nothing is swapped into a module, so nothing is shared between threads or hidden from torch.compile).

    mlp        MLP (+ residual, gated and layer-norm variants)       the sinusoid regressor, ANIL's heads
    convnet    the MAML paper's 4-block conv net                     Omniglot
    cells      DARTS' searchable / derived cell network
    policies   Gaussian MLP and GRU policies                          meta-RL
    augment    a differentiable random affine transform of images
"""
from __future__ import annotations

import torch
from torch import nn

Params = dict[str, torch.Tensor]

ACTIVATIONS = ("relu", "tanh", "silu", "gelu", "softplus")


def make_activation(name: str) -> nn.Module:
    """The hidden-layer nonlinearity by name (one of ACTIVATIONS)."""
    table = {"relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU, "gelu": nn.GELU, "softplus": nn.Softplus}
    if name not in table:
        raise ValueError(f"unknown activation {name!r}: expected one of {', '.join(ACTIVATIONS)}")
    return table[name]()


def reinit_(module: nn.Module, generator: torch.Generator) -> None:
    """Re-draw the weights of every Linear / Conv layer and recurrent cell from `generator` (PyTorch's default
    laws), so a model's initial parameters depend on an explicit seed, not the global RNG."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.RNNCellBase):  # every weight and bias U(-1/sqrt(hidden), 1/sqrt(hidden))
                bound = 1.0 / m.hidden_size**0.5
                for p in m.parameters():
                    p.copy_(torch.rand(p.shape, generator=generator) * 2 * bound - bound)
            elif isinstance(m, (nn.Linear, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                bound = 1.0 / fan_in**0.5
                m.weight.copy_(torch.rand(m.weight.shape, generator=generator) * 2 * bound - bound)
                if m.bias is not None:
                    m.bias.copy_(torch.rand(m.bias.shape, generator=generator) * 2 * bound - bound)


def parameters_of(module: nn.Module, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> Params:
    """A detached copy of a module's parameters as a plain dict (the meta-parameters' initial values)."""
    return {k: v.detach().to(device=device, dtype=dtype).clone() for k, v in module.named_parameters()}
