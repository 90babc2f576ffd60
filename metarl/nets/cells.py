"""Differentiable architecture search (DARTS, Liu et al. 2019) on a small conv cell, and the network a searched
cell derives.

    network:  stem (3x3 conv, BN, 2x2 max-pool) -> cell -> 2x2 max-pool -> cell -> ... -> mean over space
              -> linear;  every cell shares one architecture (DARTS' normal cell; resolution is reduced by
              fixed pools between cells)
    cell:     node_0 = the cell's input; node_j = sum_{i<j} edge_ij(node_i), j = 1..nodes;
              output = 1x1 conv of the mean of nodes 1..nodes, plus the input (residual)
    search:   edge_ij(x) = sum_o softmax(alpha_ij)_o op_o(x) over OPS (the mixed operation)
    derived:  each node keeps its `inputs_per_node` strongest incoming edges, each with its strongest
              operation other than zero (the genotype); edge_ij(x) = op(x)

The architecture weights alpha are the meta-parameter group "arch" of metarl.algorithms.darts; both networks
are pure functions of their parameters (`CellNetwork.call`; alpha is the parameter "alphas", kept apart by
the learner).
"""
from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from torch import nn

from metarl.nets import Params, reinit_

OPS = ("sep_conv_3x3", "sep_conv_5x5", "max_pool_3x3", "avg_pool_3x3", "skip", "zero")


class SepConv(nn.Module):
    """ReLU -> depthwise k x k -> pointwise 1x1 -> batch norm (batch statistics)."""

    def __init__(self, channels: int, k: int):
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, k, padding=k // 2, groups=channels, bias=False)
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.k = k


def make_op(name: str, channels: int) -> nn.Module:
    """The parameters of an operation (parameter-free ones: an empty module)."""
    if name.startswith("sep_conv_"):
        return SepConv(channels, int(name[-1]))
    if name in OPS:
        return nn.Identity()
    raise ValueError(f"unknown operation {name!r}: expected one of {', '.join(OPS)}")


def apply_op(name: str, params: Params, prefix: str, x: torch.Tensor) -> torch.Tensor:
    """Operation `name` on x, its parameters (if any) under `prefix` in params."""
    if name.startswith("sep_conv_"):  # ReLU -> depthwise k x k -> pointwise 1x1 -> batch norm (batch statistics)
        k = int(name[-1])
        h = F.conv2d(F.relu(x), params[prefix + "depthwise.weight"], None, padding=k // 2, groups=x.shape[1])
        return F.batch_norm(F.conv2d(h, params[prefix + "pointwise.weight"]), None, None, training=True)
    if name == "max_pool_3x3":
        return F.max_pool2d(x, 3, stride=1, padding=1)
    if name == "avg_pool_3x3":
        return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    return x if name == "skip" else x * 0.0


def edges(nodes: int) -> list[tuple[int, int]]:
    """(i, j) for every edge node_i -> node_j of a cell, in the order of alpha's rows."""
    return [(i, j) for j in range(1, nodes + 1) for i in range(j)]


class Cell(nn.Module):
    """A cell: mixed operations on every edge (genotype None) or the genotype's chosen ones."""

    def __init__(self, channels: int, nodes: int, genotype: list[tuple[int, int, str]] | None = None):
        super().__init__()
        self.nodes, self.genotype = nodes, genotype
        if genotype is None:
            self.ops = nn.ModuleList(nn.ModuleList(make_op(o, channels) for o in OPS) for _ in edges(nodes))
        else:
            self.ops = nn.ModuleList(make_op(o, channels) for _, _, o in genotype)
        self.out = nn.Conv2d(channels, channels, 1)

    def call(self, params: Params, prefix: str, x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        states = [x]
        if self.genotype is None:
            for j in range(1, self.nodes + 1):
                total = 0.0
                for e, (i, jj) in enumerate(edges(self.nodes)):
                    if jj == j:
                        total = total + sum(w * apply_op(o, params, f"{prefix}ops.{e}.{n}.", states[i])
                                            for n, (w, o) in enumerate(zip(weights[e], OPS)))
                states.append(total)
        else:
            for j in range(1, self.nodes + 1):
                inputs = [apply_op(o, params, f"{prefix}ops.{e}.", states[i])
                          for e, (i, jj, o) in enumerate(self.genotype) if jj == j]
                states.append(sum(inputs) if inputs else torch.zeros_like(x))
        out = F.conv2d(torch.stack(states[1:]).mean(0), params[prefix + "out.weight"], params[prefix + "out.bias"])
        return x + out


class CellNetwork(nn.Module):
    """Stem (with a 2x2 max-pool), `cells` cells (a 2x2 max-pool after each but the last), global mean, linear head.

    Searching (genotype None): forward uses the module parameter `alphas` (edges x ops), softmaxed per edge.
    Derived: the genotype's operations, no alphas."""

    def __init__(self, in_channels: int = 1, classes: int = 5, channels: int = 16, cells: int = 3, nodes: int = 3,
                 genotype: list[tuple[int, int, str]] | str | None = None, generator: torch.Generator | None = None):
        super().__init__()
        if isinstance(genotype, str):
            genotype = parse_genotype(genotype) if genotype else None
        self.genotype = genotype
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.stem_norm = nn.BatchNorm2d(channels, track_running_stats=False)
        self.cells = nn.ModuleList(Cell(channels, nodes, genotype) for _ in range(cells))
        self.head = nn.Linear(channels, classes)
        if genotype is None:
            self.alphas = nn.Parameter(torch.zeros(len(edges(nodes)), len(OPS)))
        if generator is not None:
            reinit_(self, generator)
            if genotype is None:
                with torch.no_grad():
                    self.alphas.copy_(1e-3 * torch.randn(self.alphas.shape, generator=generator))

    head_names = ("head.weight", "head.bias")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.call(dict(self.named_parameters()), x)

    def call(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """Logits of images x (B, C, H, W) under `params` (searching: with params["alphas"])."""
        weights = F.softmax(params["alphas"], dim=-1) if self.genotype is None else None
        x = F.batch_norm(F.conv2d(x, params["stem.weight"], params["stem.bias"], padding=1), None, None,
                         params["stem_norm.weight"], params["stem_norm.bias"], training=True)
        x = F.max_pool2d(x, 2)  # cells from half resolution: 4x less work
        for k, cell in enumerate(self.cells):
            x = cell.call(params, f"cells.{k}.", x, weights)
            if k < len(self.cells) - 1:
                x = F.max_pool2d(x, 2)
        return F.linear(x.mean((-2, -1)), params["head.weight"], params["head.bias"])


def derive_genotype(alphas: torch.Tensor, nodes: int, inputs_per_node: int = 2) -> list[tuple[int, int, str]]:
    """DARTS' discretisation: per node, the `inputs_per_node` incoming edges whose strongest non-zero operation
    is strongest, each with that operation."""
    weights = F.softmax(alphas.detach(), dim=-1)
    zero = OPS.index("zero")
    chosen = []
    for j in range(1, nodes + 1):
        scored = []
        for e, (i, jj) in enumerate(edges(nodes)):
            if jj == j:
                w = weights[e].clone()
                w[zero] = -1.0
                scored.append((float(w.max()), i, OPS[int(w.argmax())]))
        for _, i, op in sorted(scored, reverse=True)[:inputs_per_node]:
            chosen.append((i, j, op))
    return sorted(chosen, key=lambda t: (t[1], t[0]))


def format_genotype(genotype: list[tuple[int, int, str]]) -> str:
    """A genotype as one line, e.g. "0-1:sep_conv_3x3 0-2:skip 1-2:max_pool_3x3" (model.genotype takes it)."""
    return " ".join(f"{i}-{j}:{op}" for i, j, op in genotype)


def parse_genotype(text: str) -> list[tuple[int, int, str]]:
    out = []
    for item in text.split():
        try:
            pair, op = item.split(":")
            i, j = (int(v) for v in pair.split("-"))
        except ValueError:
            raise ValueError(f"genotype item {item!r} is not I-J:OP (e.g. 0-1:sep_conv_3x3)") from None
        if op not in OPS or not 0 <= i < j:
            raise ValueError(f"genotype item {item!r}: need 0 <= I < J and OP one of {', '.join(OPS)}")
        out.append((i, j, op))
    return out


def genotype_json(genotype, alphas: torch.Tensor, nodes: int) -> str:
    """The searched cell and the softmaxed architecture weights it came from, for results/."""
    weights = F.softmax(alphas.detach().double(), dim=-1)
    return json.dumps({"genotype": format_genotype(genotype), "ops": list(OPS),
                       "edges": [f"{i}-{j}" for i, j in edges(nodes)],
                       "weights": [[round(float(w), 4) for w in row] for row in weights]}, indent=1)
