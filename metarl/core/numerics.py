"""Numeric helpers on flat vectors: the outer optimisers and conjugate gradient.

The meta-parameters of a small learner are a few thousand numbers; torch.optim's per-step bookkeeping
(param groups, per-tensor state, step counters as tensors) costs more than the meta-gradient itself there.
These apply the same arithmetic as torch.optim.Adam / SGD (checked in tests) with a handful of tensor ops
on one vector, and keep their state as plain tensors and ints for checkpoints.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch


class FlatAdam:
    """Adam (Kingma & Ba) on a flat parameter vector, updated in place; the learning rate is passed per step."""

    def __init__(self, params: torch.Tensor, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = params
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.t = 0
        self.m = torch.zeros_like(params)
        self.v = torch.zeros_like(params)

    @torch.no_grad()
    def step(self, grad: torch.Tensor, lr: float) -> None:
        self.t += 1
        self.m.lerp_(grad, 1 - self.beta1)
        self.v.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        denom = (self.v.sqrt() / math.sqrt(1 - self.beta2**self.t)).add_(self.eps)
        self.params.addcdiv_(self.m, denom, value=-lr / (1 - self.beta1**self.t))

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "adam", "t": self.t, "m": self.m.detach().cpu().clone(), "v": self.v.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "adam" or state["m"].shape != self.m.shape:
            raise ValueError("optimizer state is not Adam state for these meta-parameters")
        self.t = int(state["t"])
        self.m.copy_(state["m"])
        self.v.copy_(state["v"])


class FlatSGD:
    """Plain gradient descent (Reptile's outer interpolation is SGD with lr = epsilon)."""

    def __init__(self, params: torch.Tensor):
        self.params = params

    @torch.no_grad()
    def step(self, grad: torch.Tensor, lr: float) -> None:
        self.params.add_(grad, alpha=-lr)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "sgd"}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "sgd":
            raise ValueError("optimizer state is not SGD state")


def cosine_lr(base_lr: float, iteration: int, total: int) -> float:
    """Cosine decay from base_lr at iteration 0 towards 0 at `total` (CosineAnnealingLR's closed form)."""
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(iteration, total) / total))


def conjugate_gradient(Avp: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int = 10,
                       tol: float = 1e-10, with_product: bool = False):
    """Approximately solve A x = b for a symmetric positive definite A given as a product function.
    with_product: also return A x, known without another product as b - r (r the recursive residual)."""
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r @ r
    for _ in range(iters):
        if rr < tol:
            break
        Ap = Avp(p)
        alpha = rr / (p @ Ap)
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return (x, b - r) if with_product else x
