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


# two-sided 95% quantiles of Student's t with n - 1 degrees of freedom, for a mean over a few seeds
_T_95 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}


def seed_mean_ci95(values) -> tuple[float, float]:
    """Mean and half-width of the 95% confidence interval of the mean of a few runs (seeds): Student's t,
    which the normal approximation of mean_ci95 would make far too narrow at n = 3."""
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if v.numel() < 2:
        return (float(v.mean()) if v.numel() else float("nan")), float("nan")
    nu, z = v.numel() - 1, Z_95  # beyond the table: the Cornish-Fisher expansion of t in 1 / nu (< 0.1% off)
    t = _T_95.get(v.numel(), z + (z**3 + z) / (4 * nu) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * nu**2))
    return float(v.mean()), t * float(v.std(unbiased=True)) / math.sqrt(v.numel())
