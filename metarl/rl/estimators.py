"""Inner-loop policy-gradient losses of ONE task (the learners differentiate them, maybe twice).

All three have the same gradient at the sampling parameters, -mean_t grad log pi(a_t|s_t) A_t; they differ in
their Hessians, i.e. in the second-order terms of the meta-gradient:

* reinforce: -mean(log pi * A). Its Hessian misses the terms from the dependence of the sampling law on theta.
* dice (Loaded DiCE, Farquhar et al. 2019): -mean((M(S_t) - M(S_{t-1})) A_t) with S_t the cumulative log-prob
  of the episode up to t and M(x) = exp(x - stop(x)); its derivatives of every order are the score-function
  estimators, so the Hessian includes the cross-time terms.
* lvc (ProMP, Rothfuss et al. 2019): -mean(exp(log pi - stop(log pi)) A), a low-variance curvature estimate.

Tensors: log_probs, advantages, mask of shape (E, H); the mean is over valid steps.
"""
from __future__ import annotations

from typing import Callable

import torch

Estimator = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp_min(1)


def magic_box(x: torch.Tensor) -> torch.Tensor:
    """DiCE's operator: value 1, gradient x' * M(x)."""
    return torch.exp(x - x.detach())


def reinforce_loss(log_probs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return -_masked_mean(log_probs * advantages, mask)


def dice_loss(log_probs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    s = torch.cumsum(log_probs * mask, dim=-1)
    s_prev = s - log_probs * mask
    return -_masked_mean((magic_box(s) - magic_box(s_prev)) * advantages, mask)


def lvc_loss(log_probs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return -_masked_mean(magic_box(log_probs) * advantages, mask)


ESTIMATORS: dict[str, Estimator] = {"reinforce": reinforce_loss, "dice": dice_loss, "lvc": lvc_loss}


def get_estimator(name: str) -> Estimator:
    if name not in ESTIMATORS:
        raise ValueError(f"unknown inner-loss estimator {name!r}: expected one of {', '.join(ESTIMATORS)}")
    return ESTIMATORS[name]
