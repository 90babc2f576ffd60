"""A differentiable random affine augmentation of images, whose magnitudes can be meta-learned.

    u ~ U(-1, 1)^5 per image (drawn by the experience source from its generator: data, not hidden state)
    angle = m_rot u_0,  scale = exp(m_scale u_1),  shear = m_shear u_2,  shift = m_shift (u_3, u_4)
    x' = bilinear resampling of x at [[s cos a, -s sin a + shear, shift_x], [s sin a, s cos a, shift_y]] @ (p, 1)

in torch's normalised coordinates (-1..1 across the image; outside it is zero, the background of the
Omniglot images). x' is differentiable in the magnitudes m, so with MAML the outer loss reaches them through
the inner step on the augmented support set (`learner.augmentation: learned`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

#: what each magnitude scales (learner.augment_magnitudes)
MAGNITUDES = ("rotation (radians)", "log-scale", "shear", "translation (fraction of the half-width)")
#: random numbers per image
NOISE_DIMS = 5


def affine_matrices(magnitudes: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(n, 2, 3) sampling matrices for noise u (n, NOISE_DIMS) and the 4 magnitudes."""
    angle, log_scale, shear = magnitudes[0] * u[:, 0], magnitudes[1] * u[:, 1], magnitudes[2] * u[:, 2]
    shift = magnitudes[3] * u[:, 3:5]
    scale, cos, sin = log_scale.exp(), angle.cos(), angle.sin()
    row0 = torch.stack([scale * cos, -scale * sin + shear, shift[:, 0]], -1)
    row1 = torch.stack([scale * sin, scale * cos, shift[:, 1]], -1)
    return torch.stack([row0, row1], -2)


def affine_augment(x: torch.Tensor, magnitudes: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Images x (n, C, H, W) resampled under the random affine maps of u (n, NOISE_DIMS); magnitudes 0 give x."""
    if u.shape != (x.shape[0], NOISE_DIMS):
        raise ValueError(f"augmentation noise must be shaped ({x.shape[0]}, {NOISE_DIMS}), got {tuple(u.shape)}")
    grid = F.affine_grid(affine_matrices(magnitudes.to(x.dtype), u.to(x.dtype)), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augmented(data, magnitudes: torch.Tensor | None):
    """A support set as the loss sees it: (x, y, u) from a source that adds noise becomes (x', y) under
    `magnitudes` (None: no augmentation, the noise is dropped); any other data is returned as it is."""
    if not (isinstance(data, tuple) and len(data) == 3):
        return data
    x, y, u = data
    return (x, y) if magnitudes is None else (affine_augment(x, magnitudes, u), y)


def check_augmentation(augmentation: str, magnitudes) -> tuple[float, ...]:
    """A learner's augmentation setting (none, fixed, learned) and its magnitudes, checked; the magnitudes as floats."""
    if augmentation not in ("none", "fixed", "learned"):
        raise ValueError(f"augmentation must be none, fixed or learned, got {augmentation!r}")
    if augmentation != "none" and len(magnitudes) != len(MAGNITUDES):
        raise ValueError(f"augment_magnitudes needs {len(MAGNITUDES)} values ({', '.join(MAGNITUDES)}), got "
                         f"{list(magnitudes)}")
    return tuple(float(m) for m in magnitudes)


def magnitudes_tensor(values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
    """The 4 magnitudes as a tensor of `like`'s dtype and device (the "augment" group's initial value)."""
    return torch.tensor(values, dtype=like.dtype, device=like.device)


def current_magnitudes(meta: dict, augmentation: str, fixed: tuple[float, ...]) -> torch.Tensor | None:
    """The magnitudes a learner augments with: None (none), the meta-parameter group "augment" (learned), or the
    fixed values on theta's dtype and device."""
    if augmentation == "none":
        return None
    if augmentation == "learned":
        return meta["augment"]["magnitudes"]
    return magnitudes_tensor(fixed, next(iter(meta["theta"].values())))
