"""A module's forward as a pure function of (params, x): parameters looked up by their names in a dict, nothing
read from (or swapped into) the module, so one module serves every task at once, on any thread."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from metarl.nets import Params

PureFn = Callable[[Params, torch.Tensor], torch.Tensor]


def linear(prefix: str) -> PureFn:
    return lambda p, x: F.linear(x, p[prefix + "weight"], p.get(prefix + "bias"))


def pure(module: nn.Module, prefix: str = "") -> PureFn:
    """module's forward as a function of (params, x), for modules built of nn.Sequential, nn.Linear, parameter-free
    modules (activations, nn.Flatten, ...) and layers that say how (a `pure(prefix)` method)."""
    if hasattr(module, "pure"):
        return module.pure(prefix)
    if isinstance(module, nn.Sequential):
        parts = [pure(child, f"{prefix}{name}.") for name, child in module.named_children()]

        def chain(p: Params, x: torch.Tensor) -> torch.Tensor:
            for part in parts:
                x = part(p, x)
            return x

        return chain
    if isinstance(module, nn.Linear):
        return linear(prefix)
    if next(module.parameters(), None) is not None:
        raise TypeError(f"no pure form of {type(module).__name__}: give it a pure(prefix) method or a call(params, x)")
    return lambda p, x: module(x)
