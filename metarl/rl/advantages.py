"""Returns, the per-task linear feature baseline (fitted for all tasks at once) and GAE."""
from __future__ import annotations

import torch

from metarl.rl.sampler import Rollouts


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float, carry: bool = False) -> torch.Tensor:
    """R_t = r_t + gamma * R_{t+1} over the last dim (time), 0 after termination. carry: masked steps are
    skipped instead (an RL² trial: the return of an episode that ended early includes the next episodes')."""
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        m = mask[..., t]
        running = (rewards[..., t] + gamma * running) * m + running * ((1 - m) if carry else 0)
        out[..., t] = running * m
    return out


def baseline_features(obs: torch.Tensor, horizon_scale: float = 100.0) -> torch.Tensor:
    """rllab's linear-baseline features of (T, E, H, d) observations: (obs, obs^2, t, t^2, t^3, 1)."""
    o = obs.clamp(-10, 10)
    H = obs.shape[-2]
    t = (torch.arange(H, device=obs.device, dtype=obs.dtype) / horizon_scale).view(H, 1).expand(*obs.shape[:-1], 1)
    return torch.cat([o, o * o, t, t**2, t**3, torch.ones_like(t)], dim=-1)


def fit_linear_baseline(obs: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, reg: float = 1e-5) -> torch.Tensor:
    """Least squares (ridge `reg`) of returns on features, one weight vector per task, solved in one batched call.

    obs (T, E, H, d), returns and mask (T, E, H). Returns the fitted values (T, E, H), 0 where masked.
    """
    T = obs.shape[0]
    X = baseline_features(obs).double().reshape(T, -1, 2 * obs.shape[-1] + 4)
    w = mask.double().reshape(T, -1, 1)
    y = returns.double().reshape(T, -1, 1)
    A = X.transpose(1, 2) @ (w * X)
    b = X.transpose(1, 2) @ (w * y)
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    # A + reg I is symmetric positive definite: Cholesky (torch 2.13's batched LU solve fails on CPU for
    # Ant's 214 features); rllab raises the ridge until the factorisation succeeds
    for _ in range(5):
        L, info = torch.linalg.cholesky_ex(A + reg * eye)
        coef = torch.cholesky_solve(b, L)
        if not bool(info.any()) and bool(torch.isfinite(coef).all()):
            break
        reg *= 10
    return ((X @ coef).reshape(returns.shape) * mask.double()).to(returns.dtype)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float,
        carry: bool = False) -> torch.Tensor:
    """Generalised advantage estimation over the last dim; V after the horizon or termination is 0.
    carry: masked steps are skipped instead (the next valid step follows; see discounted_returns)."""
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    next_value = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        m = mask[..., t]
        keep = (1 - m) if carry else 0  # what a masked step passes on: the later values (carry) or nothing
        delta = rewards[..., t] + gamma * next_value - values[..., t]
        running = (delta + gamma * lam * running) * m + running * keep
        next_value = values[..., t] * m + next_value * keep
        adv[..., t] = running * m
    return adv


def normalize_per_task(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the valid steps of each task (dim 0 = task)."""
    dims = tuple(range(1, x.ndim))
    n = mask.sum(dims, keepdim=True).clamp_min(1)
    mean = (x * mask).sum(dims, keepdim=True) / n
    var = (((x - mean) * mask) ** 2).sum(dims, keepdim=True) / n
    return (x - mean) / torch.sqrt(var + eps) * mask


def process_rollouts(r: Rollouts, gamma: float = 0.99, gae_lambda: float = 1.0, normalize: bool = True,
                     carry: bool = False) -> dict[str, torch.Tensor]:
    """The per-task data of a collection: obs, actions, mask, advantages, rewards (all leading (T, E, H)).
    carry: the time axis is a trial of several episodes whose returns flow across masked steps (RL²)."""
    returns = discounted_returns(r.rewards, r.mask, gamma, carry)
    values = fit_linear_baseline(r.obs, returns, r.mask)
    adv = gae(r.rewards, values, r.mask, gamma, gae_lambda, carry)
    if normalize:
        adv = normalize_per_task(adv, r.mask)
    return {"obs": r.obs, "actions": r.actions, "mask": r.mask, "advantages": adv, "rewards": r.rewards}
