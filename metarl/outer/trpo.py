"""TRPO's outer step (Schulman et al. 2015), as MAML-TRPO uses it (Finn et al. 2017):

    g  = grad of the surrogate loss at theta                     (through the adaptation: the learner's meta_loss)
    H  = Hessian of the mean KL(pi_old || pi_theta) over the tasks (the KL of the adapted policies); H v by
         double backward through the adaptation (hvp autograd), or the learner's own product (hvp gauss_newton:
         Learner.kl_curvature), on a subset of the tasks and of their episodes (hvp_*_fraction)
    d  = CG(H + damping I, g, cg_iters);   full step s = d * sqrt(2 max_kl / d^T H d)
    line search: theta - f s for f = f_0, f_0 b, f_0 b^2, ... until the loss falls and KL <= max_kl
All means over tasks are all-reduced across ranks, so every rank takes the same step.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_map

from metarl.algorithms.base import Batch
from metarl.core.numerics import conjugate_gradient
from metarl.core.params import detach
from metarl.outer.problem import MetaProblem, check_finite


class TRPOStep:
    """TRPO's outer step on the learner's loss; its metrics must hold "kl", the mean KL(pi_old || pi).
    hvp_task_fraction and hvp_episode_fraction: the tasks, and the episodes of each, whose KL drives the CG's
    products (rllab's subsampled Fisher; episodes with gauss_newton only: autograd would adapt on the kept support
    episodes alone, away from the policy that sampled the query); hvp: "autograd" (double backward through the
    adaptation) or "gauss_newton" (the learner's kl_curvature, e.g. MAML's J^T F J).

    The line search's first trial: the full step, whose quadratic KL model is max_kl, shrunk by the last accepted
    step's ratio of measured to modelled KL when the model fell short (KL ~ step^2, so by 1 / sqrt(ratio), with a
    2% margin): with a subsampled Fisher the model is often a few percent low, and the full step would be
    rejected every iteration at the cost of one more adaptation and forward. The ratio is state (checkpointed)."""

    def __init__(self, max_kl: float = 0.01, cg_iters: int = 10, cg_damping: float = 1e-5, ls_max_steps: int = 15,
                 ls_backtrack: float = 0.8, hvp_task_fraction: float = 1.0, hvp_episode_fraction: float = 1.0,
                 hvp: str = "autograd"):
        self.max_kl, self.cg_iters, self.cg_damping = float(max_kl), int(cg_iters), float(cg_damping)
        self.ls_max_steps, self.ls_backtrack = int(ls_max_steps), float(ls_backtrack)
        self.hvp_task_fraction, self.hvp_episode_fraction, self.hvp = hvp_task_fraction, hvp_episode_fraction, hvp
        self.kl_ratio = 1.0  # measured / modelled KL of the last accepted step

    def step(self, flat: torch.Tensor, batch: Batch, problem: MetaProblem, iteration: int = 0) -> dict[str, float]:
        s, reduce = self, problem.reduce
        x = flat.detach().clone().requires_grad_(True)
        loss, metrics = problem.loss(x, batch)
        g = torch.autograd.grad(loss, x, retain_graph=s.hvp == "autograd")[0]  # the autograd HVPs reuse the graph
        g, loss_all = reduce(g, loss.detach())
        check_finite(float(loss_all), float(g.norm()))
        sub, share = self._hvp_batch(batch)
        if sub is None:  # none of the subsample's tasks is on this rank: it adds nothing to the products
            def local_hv(v: torch.Tensor) -> torch.Tensor:
                return torch.zeros_like(v)
        elif s.hvp == "gauss_newton":
            curvature = problem.learner.kl_curvature(detach(problem.layout.unflatten(x)), sub)

            def local_hv(v: torch.Tensor) -> torch.Tensor:
                return problem.layout.flatten(curvature(problem.layout.unflatten(v)))
        else:
            kl = metrics["kl"] if sub is batch else problem.loss(x, sub)[1]["kl"]
            grad_kl = torch.autograd.grad(kl, x, create_graph=True)[0]

            def local_hv(v: torch.Tensor) -> torch.Tensor:
                return torch.autograd.grad(grad_kl @ v, x, retain_graph=True)[0]

        def Hv(v: torch.Tensor) -> torch.Tensor:
            return reduce(local_hv(v), share=share)[0] + s.cg_damping * v

        step_dir, H_step_dir = conjugate_gradient(Hv, g, s.cg_iters, with_product=True)  # one product fewer
        shs = 0.5 * (step_dir @ H_step_dir)
        # the quadratic model 0.5 d^T H d of the KL equals max_kl at `full_step`
        full_step = step_dir / torch.sqrt(shs / s.max_kl).clamp_min(1e-12)
        old = float(loss_all)
        info = {"meta_loss": old, "grad_norm": float(g.norm()), "accepted": 0.0, "kl": 0.0, "step_frac": 0.0,
                "loss_after": old}
        frac = min(1.0, 0.98 / math.sqrt(self.kl_ratio)) if self.kl_ratio > 1 else 1.0
        with torch.no_grad():
            for _ in range(s.ls_max_steps):
                cand = flat - frac * full_step
                new_loss, new_metrics = problem.loss(cand, batch)
                new_loss, new_kl = (float(t) for t in reduce(new_loss, new_metrics["kl"]))
                if new_loss < old and new_kl <= s.max_kl:
                    flat.copy_(cand)
                    info.update(accepted=1.0, kl=new_kl, step_frac=frac, loss_after=new_loss)
                    if new_kl > 0:
                        self.kl_ratio = new_kl / (s.max_kl * frac * frac)
                        info["kl_model_ratio"] = self.kl_ratio  # measured / modelled KL of the accepted step
                    break
                frac *= s.ls_backtrack
        return info

    def _hvp_batch(self, batch: Batch) -> tuple[Batch | None, float | None]:
        """Evenly spaced, fixed subsets of the tasks and of each task's episodes (rllab's subsampled Fisher), or
        the whole batch; and this batch's weight in the mean over the subset (None: its share of the whole).
        The tasks are chosen among the whole batch's (Batch.first, .total), so W torch.distributed ranks, each
        with its part, use the tasks one process would; a rank with none of them gets (None, 0)."""
        n, total = batch.num_tasks, batch.total_tasks
        n_sub = max(1, round(self.hvp_task_fraction * total))
        share = None
        if n_sub < total:
            chosen = torch.linspace(0, total - 1, n_sub).round().long() - batch.first
            mine = chosen[(chosen >= 0) & (chosen < n)]
            if len(mine) == 0:
                return None, 0.0
            batch, share = batch.take(mine), len(mine) / n_sub
        return (batch if self.hvp_episode_fraction >= 1 else episode_subset(batch, self.hvp_episode_fraction)), share

    def state_dict(self) -> dict[str, Any]:
        return {"kl_ratio": self.kl_ratio}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kl_ratio = float(state.get("kl_ratio", 1.0))  # checkpoints before the ratio existed: none yet


def episode_subset(batch: Batch, fraction: float) -> Batch:
    """The batch with an evenly spaced `fraction` of each task's episodes: RL data, every tensor shaped
    (tasks, episodes, ...); the losses' masked means then average over the episodes kept."""
    leaves = tree_flatten((batch.support, batch.query))[0]
    episodes = {t.shape[1] if t.dim() >= 2 else None for t in leaves}
    if len(episodes) != 1 or None in episodes:
        raise ValueError(f"episode subsets need data shaped (tasks, episodes, ...) throughout; got episode dims {episodes}")
    (e,) = episodes
    keep = max(1, round(fraction * e))
    if keep >= e:
        return batch
    index = torch.linspace(0, e - 1, keep).round().long().to(leaves[0].device)
    pick = lambda t: t.index_select(1, index)  # noqa: E731
    return Batch(batch.tasks, tree_map(pick, batch.support), tree_map(pick, batch.query), batch.first, batch.total)


def build(cfg, flat) -> TRPOStep:
    o = cfg.outer
    return TRPOStep(o.max_kl, o.cg_iters, o.cg_damping, o.ls_max_steps, o.ls_backtrack, o.hvp_task_fraction,
                    o.hvp_episode_fraction, o.hvp)
