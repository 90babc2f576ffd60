"""Parameters as plain data: a dict of tensors per network, a dict of those per meta-parameter group, and one
flat vector holding all of them (what the outer optimisers, TRPO and torch.distributed work on)."""
from __future__ import annotations

import torch
from torch.utils._pytree import tree_map

Params = dict[str, torch.Tensor]
#: {"theta": initialisation, "log_inner_lr": Meta-SGD step sizes, "lstm": the LSTM optimiser, ...}
MetaParams = dict[str, Params]
Metrics = dict[str, torch.Tensor]


class FlatLayout:
    """Where each meta-parameter lives in one flat vector, and the views that map between the two."""

    def __init__(self, meta: MetaParams):
        self.entries = [(g, k, t.shape) for g, d in meta.items() for k, t in d.items()]
        self.size = sum(shape.numel() for _, _, shape in self.entries)

    def flatten(self, meta: MetaParams) -> torch.Tensor:
        return torch.cat([meta[g][k].reshape(-1) for g, k, _ in self.entries])

    def unflatten(self, flat: torch.Tensor) -> MetaParams:
        """Views of `flat` (so a gradient or an in-place update of `flat` reaches them)."""
        meta: MetaParams = {}
        offset = 0
        for g, k, shape in self.entries:
            n = shape.numel()
            meta.setdefault(g, {})[k] = flat[offset : offset + n].view(shape)
            offset += n
        return meta

    def matches(self, meta: MetaParams) -> bool:
        return [(g, k, t.shape) for g, d in meta.items() for k, t in d.items()] == self.entries


def detach(tree):
    return tree_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, tree)


def expand(tree, n: int):
    """Shared values -> per-task values: a leading dim of n (views, no copies)."""
    return tree_map(lambda t: t.unsqueeze(0).expand(n, *t.shape), tree)


def take(tree, index):
    """The tasks `index` (a slice or an index tensor) of every tensor with a leading task dim."""
    return tree_map(lambda t: t[index] if isinstance(t, torch.Tensor) else t, tree)


def to_device(tree, device: torch.device | str):
    return tree_map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, tree)
