"""The MAML paper's few-shot conv learner, as a pure function of its parameters (`ConvNet.call`).

    4 x [3x3 conv (64 filters, padding 1) -> batch norm -> ReLU -> 2x2 max-pool]  ->  flatten -> linear(N)

28 x 28 inputs shrink 28 -> 14 -> 7 -> 3 -> 1, so the head sees 64 features.

Layout: activations are kept channels-last (B, H, W, C); torch's conv2d / batch_norm / max_pool2d see them as
NCHW views in channels-last memory, which oneDNN runs fastest on CPU. Vmapped over tasks with per-task
weights, conv2d becomes one grouped convolution. Measured alternatives (single thread, CPU seconds of one
second-order meta-gradient of 8 tasks; a per-task autograd loop took 1.34 s): im2col (9 shifted views
concatenated) + batched matmul 5.2 s, shifted-row matmuls 3.8 s, these native ops 2.2 s (a contiguous
NCHW layout: 2.3 s). The copies of the
im2col columns cost more than the matmuls save.

Batch norm uses the statistics of the batch it is given, in training and at test time alike (no running
statistics, like `nn.BatchNorm2d(track_running_stats=False)`). Inside the vmapped inner loop the batch is one
task's support set or query set, so a query set is normalised by its own statistics: the transductive
setting of the MAML paper's code. `forward(x, reference_rows=r)` is the non-transductive one: the statistics
come from the first r rows (the task's support set, put before its queries) and normalise every row, so each
query is classified without the other queries (`model.batch_norm: support`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metarl.nets import Params, reinit_


def _nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


def conv3x3_nhwc(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """3x3 convolution, stride 1, zero padding 1, of x (B, H, W, C) with an nn.Conv2d weight (O, C, 3, 3)."""
    return _nhwc(F.conv2d(_nchw(x), weight, bias, padding=1))


def batch_norm_nhwc(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Batch norm over (B, H, W) with the batch's own (biased) statistics.

    Normalised by F.batch_norm WITHOUT its affine weight and bias, which are applied after with addcmul:
    vmapped with per-task weight and bias, F.batch_norm's second-order gradient is wrong in torch 2.13 (the
    MAML meta-gradient then misses finite differences by a few percent), while the normalisation alone is
    right (tests/test_convnet.py checks the meta-gradient against a per-task loop and finite differences).
    It is also faster than writing the statistics out (2.2 s vs 3.0 s in the measurement above).
    """
    x_hat = _nhwc(F.batch_norm(_nchw(x), None, None, None, None, training=True, eps=eps))
    return torch.addcmul(bias, x_hat, weight)


def support_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, rows: int, eps: float,
                 channel_dim: int) -> torch.Tensor:
    """Batch norm of all rows of x with the (biased) statistics of its first `rows` rows, written with
    elementary ops (correct under vmap to second order)."""
    dims = tuple(d for d in range(x.ndim) if d != channel_dim % x.ndim)
    ref = x[:rows]
    mean = ref.mean(dims, keepdim=True)
    var = ((ref - mean) ** 2).mean(dims, keepdim=True)
    shape = [1] * x.ndim
    shape[channel_dim] = -1
    return (x - mean) * torch.rsqrt(var + eps) * weight.view(shape) + bias.view(shape)


def max_pool2_nhwc(x: torch.Tensor) -> torch.Tensor:
    """2x2 max-pool, stride 2, dropping an odd last row / column."""
    return _nhwc(F.max_pool2d(_nchw(x), 2))


class ConvBlock(nn.Module):
    """The parameters of conv 3x3 -> batch norm (batch statistics) -> ReLU -> max-pool 2x2 (ConvNet runs it)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm = nn.BatchNorm2d(out_channels, track_running_stats=False)


class ConvNet(nn.Module):
    """The MAML paper's Omniglot / MiniImagenet learner: 4 conv blocks and a linear head.

    Input (B, C, H, W) (images as the task distributions give them); output logits (B, ways). The parameter
    names are those of nn.Conv2d / nn.BatchNorm2d / nn.Linear.
    """

    def __init__(self, in_channels: int = 1, ways: int = 5, channels: int = 64, blocks: int = 4,
                 image_size: int = 28, generator: torch.Generator | None = None, layout: str = "channels_last"):
        super().__init__()
        if layout not in ("channels_last", "nchw"):
            raise ValueError(f"layout must be channels_last or nchw, got {layout!r}")
        #: channels_last: the vmap path above (per-task weights as grouped convolutions); nchw: plain ops on
        #: contiguous NCHW tensors, for one task at a time (task batching loop / threads). Not channels-last
        #: memory there: torch's CPU batch norm on it loses float32 digits to cancellation (a 1e-2 relative
        #: meta-gradient error on Omniglot drawings). Same parameters, same outputs.
        self.layout = layout
        dims = [in_channels] + [channels] * blocks
        self.blocks = nn.Sequential(*[ConvBlock(a, b) for a, b in zip(dims[:-1], dims[1:])])
        side = image_size
        for _ in range(blocks):
            side //= 2
        if side < 1:
            raise ValueError(f"image_size {image_size} is too small for {blocks} blocks of 2x2 pooling")
        self.head = nn.Linear(channels * side * side, ways)
        if generator is not None:
            reinit_(self, generator)

    #: the parameters of the linear head (what ANIL adapts; ProtoNets computes it from the support set)
    head_names = ("head.weight", "head.bias")

    def forward(self, x: torch.Tensor, reference_rows: int = 0) -> torch.Tensor:
        return self.call(dict(self.named_parameters()), x, reference_rows)

    def call(self, params: Params, x: torch.Tensor, reference_rows: int = 0) -> torch.Tensor:
        """Logits of images x (B, C, H, W) under `params`; reference_rows r > 0: batch norm with the first r
        rows' statistics."""
        return F.linear(self.features(params, x, reference_rows), params["head.weight"], params["head.bias"])

    def features(self, params: Params, x: torch.Tensor, reference_rows: int = 0) -> torch.Tensor:
        """What the head sees: the flattened output of the conv blocks, (B, features)."""
        nchw = self.layout == "nchw"
        if not nchw:
            x = x.permute(0, 2, 3, 1)  # channels-last: the channel axis is the matmul's inner axis
        for i in range(len(self.blocks)):
            weight, bias = params[f"blocks.{i}.conv.weight"], params[f"blocks.{i}.conv.bias"]
            gain, shift, eps = params[f"blocks.{i}.norm.weight"], params[f"blocks.{i}.norm.bias"], self.blocks[i].norm.eps
            if nchw:
                x = F.conv2d(x, weight, bias, padding=1)
            else:
                x = conv3x3_nhwc(x, weight, bias)
            if reference_rows:
                x = support_norm(x, gain, shift, reference_rows, eps, 1 if nchw else -1)
            elif nchw:
                x = F.batch_norm(x, None, None, gain, shift, training=True, eps=eps)
            else:
                x = batch_norm_nhwc(x, gain, shift, eps)
            x = F.max_pool2d(F.relu(x), 2) if nchw else max_pool2_nhwc(torch.relu(x))
        if nchw:
            x = x.permute(0, 2, 3, 1)  # flattened in channels-last order either way
        return x.reshape(x.shape[0], -1)


def reference_forward(params: dict[str, torch.Tensor], x: torch.Tensor, blocks: int = 4) -> torch.Tensor:
    """The same network on contiguous NCHW tensors, one task at a time (tests and the per-task baseline)."""
    for i in range(blocks):
        p = f"blocks.{i}."
        x = F.conv2d(x, params[p + "conv.weight"], params[p + "conv.bias"], padding=1)
        x = F.batch_norm(x, None, None, params[p + "norm.weight"], params[p + "norm.bias"], training=True)
        x = F.max_pool2d(F.relu(x), 2)
    # flatten in channels-last order, as ConvNet does
    x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
    return F.linear(x, params["head.weight"], params["head.bias"])
