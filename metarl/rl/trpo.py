"""TRPO's natural-gradient step: conjugate gradient on Hessian-vector products of the mean KL, then a
backtracking line search that accepts only a step that lowers the loss and keeps the KL within the bound.

Works on any differentiable `loss_and_kl(params) -> (loss, kl, metrics)`; for MAML-RL both go through the
inner adaptation step, so the KL's Hessian is taken through the adaptation (third-order terms included).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

Params = dict[str, torch.Tensor]
LossAndKL = Callable[[Params], tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]]


@dataclass
class TRPOSettings:
    max_kl: float = 0.01
    """Bound on the mean KL(pi_old || pi_new) of the accepted step."""
    cg_iters: int = 10
    """Conjugate-gradient iterations (Hessian-vector products) per step."""
    cg_damping: float = 1e-5
    """Added to the KL Hessian (H + damping I) for a well-posed CG solve."""
    ls_max_steps: int = 15
    """Backtracking line-search trials before the step is rejected."""
    ls_backtrack: float = 0.8
    """Step-size factor between line-search trials."""
    hvp_task_fraction: float = 1.0
    """Fraction of the meta-batch's tasks whose KL drives the Hessian-vector products (1.0 = all)."""
    hvp: str = "autograd"
    """How the KL Hessian-vector product is taken: "autograd" (double backward through the adaptation graph) or
    "gauss_newton" (J^T F J v with J = d phi / d theta by forward-over-reverse; equal at the current params)."""


def conjugate_gradient(Avp: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int = 10,
                       tol: float = 1e-10) -> torch.Tensor:
    """Approximately solve A x = b for a symmetric positive definite A given as a product function."""
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
    return x


def _flat(ts) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in ts])


def _unflat(vec: torch.Tensor, like: Params) -> Params:
    out, i = {}, 0
    for k, v in like.items():
        out[k] = vec[i : i + v.numel()].view_as(v)
        i += v.numel()
    return out


def trpo_step(params: Params, loss_and_kl: LossAndKL, s: TRPOSettings = TRPOSettings(),
              kl_for_hvp: Callable[[Params], torch.Tensor] | None = None,
              hvp: Callable[[Params], Params] | None = None) -> tuple[Params, dict[str, float]]:
    """One TRPO update of `params`; returns the new (detached) params and diagnostics.

    `kl_for_hvp` (default: the KL of `loss_and_kl`) is the KL whose Hessian-vector products drive CG; passing
    the KL of a subset of the data makes the ten CG products cheaper (rllab's subsampled Fisher) while the
    gradient and the line search's checks still use all the data.

    If no step size of the line search lowers the loss within the KL bound, the params are returned unchanged
    (`accepted` = 0). `hvp(v)`, when given, replaces autograd's KL Hessian-vector product (same structure as
    params in and out); `kl_for_hvp` is then unused.
    """
    theta = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    leaves = list(theta.values())
    loss, kl, metrics = loss_and_kl(theta)
    g = _flat(torch.autograd.grad(loss, leaves, retain_graph=True))
    if hvp is None:
        kl_h = kl if kl_for_hvp is None else kl_for_hvp(theta)
        grad_kl = _flat(torch.autograd.grad(kl_h, leaves, create_graph=True))

        def Hv(v: torch.Tensor) -> torch.Tensor:
            return _flat(torch.autograd.grad(grad_kl @ v, leaves, retain_graph=True)) + s.cg_damping * v
    else:
        def Hv(v: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return _flat(hvp(_unflat(v, theta)).values()) + s.cg_damping * v

    step_dir = conjugate_gradient(Hv, g, s.cg_iters)
    shs = 0.5 * (step_dir @ Hv(step_dir))
    # the quadratic model 0.5 * d^T H d of the KL equals max_kl at `full_step`
    full_step = step_dir / torch.sqrt(shs / s.max_kl).clamp_min(1e-12)
    old_loss = float(loss.detach())
    info = {"loss_before": old_loss, "accepted": 0.0, "kl": 0.0, "step_frac": 0.0, "grad_norm": float(g.norm())}
    detached = {k: v.detach() for k, v in theta.items()}
    frac = 1.0
    with torch.no_grad():
        for _ in range(s.ls_max_steps):
            cand = {k: v - frac * d for (k, v), d in zip(detached.items(), _unflat(full_step, detached).values())}
            new_loss, new_kl, _ = loss_and_kl(cand)
            if float(new_loss) < old_loss and float(new_kl) <= s.max_kl:
                info.update(accepted=1.0, kl=float(new_kl), step_frac=frac, loss_after=float(new_loss))
                return cand, info
            frac *= s.ls_backtrack
    info["loss_after"] = old_loss
    return detached, info
