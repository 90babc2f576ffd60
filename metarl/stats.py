"""Summary statistics for evaluation over many held-out tasks."""
from __future__ import annotations

import math

import torch

Z_95 = 1.959963984540054  # two-sided 95% quantile of the normal law; evaluations use >= 1000 tasks


def mean_ci95(values: torch.Tensor) -> tuple[float, float]:
    """Mean and half-width of the normal-approximation 95% confidence interval of the mean."""
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if v.numel() == 0:
        raise ValueError("mean_ci95 needs at least one value")
    mean = float(v.mean())
    if v.numel() == 1:
        return mean, float("nan")
    return mean, Z_95 * float(v.std(unbiased=True)) / math.sqrt(v.numel())
