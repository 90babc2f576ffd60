"""The outer step: how the meta-parameters move given a batch. Pluggable, all on one flat parameter vector.

    GradientStep  Adam or SGD on the meta-gradient, `epochs` times per batch. Covers MAML / Meta-SGD / LSTM
                  (Adam, one epoch), PPO (Adam epochs on the clipped surrogate) and Reptile (its update as
                  a gradient: SGD with lr = epsilon is the interpolation).
    TRPOStep      the natural-gradient step of TRPO: conjugate gradient on Hessian-vector products of the mean
                  KL through the adaptation, then a backtracking line search within the KL bound.

`MetaProblem` is what they see: the learner's loss and gradient as functions of the flat vector, with the
means over tasks taken over all torch.distributed ranks (each rank holds its share of the task batch).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch.func import vmap
from torch.utils._pytree import tree_flatten, tree_map

from metarl.errors import NonFiniteLossError
from metarl.learners.base import Batch, Learner, at
from metarl.optim import FlatAdam, FlatSGD
from metarl.params import FlatLayout, detach

if TYPE_CHECKING:
    from metarl.config import OuterConfig


class MetaProblem:
    """A learner's outer loss and meta-gradient as functions of the flat meta-parameter vector.

    `reduce(*tensors)` turns this rank's means into means over all tasks (identity in one process);
    `gradient` may be compiled (`compile_fn`)."""

    def __init__(self, learner: Learner, layout: FlatLayout, reduce: Callable[..., list[torch.Tensor]] | None = None,
                 compile_fn: Callable[[Callable], Callable] | None = None):
        self.learner, self.layout = learner, layout
        self.reduce = reduce or (lambda *t: list(t))
        self._gradient = compile_fn(self._flat_gradient) if compile_fn else self._flat_gradient

    def _flat_gradient(self, flat: torch.Tensor, support, query):
        grads, loss, metrics = self.learner.meta_gradient(self.layout.unflatten(flat), support, query)
        return self.layout.flatten(grads), loss, metrics

    def gradient(self, flat: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        grad_, loss, metrics = self._gradient(flat, batch.support, batch.query)
        names = list(metrics)
        grad_, loss, *values = self.reduce(grad_, loss, *metrics.values())
        return grad_, loss, dict(zip(names, values))

    def loss(self, flat: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """This rank's loss and metrics (with the graph; not reduced)."""
        return self.learner.meta_loss(self.layout.unflatten(flat), batch.support, batch.query)


def _check_finite(loss: float, grad_norm: float) -> None:
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        raise NonFiniteLossError(-1, loss if not math.isfinite(loss) else grad_norm, None)


class GradientStep:
    """`epochs` passes of a flat Adam / SGD per batch, each pass one step per minibatch of tasks (a fresh
    meta-gradient each; nothing applied when the loss or the gradient is not finite). The learning rate comes
    from `lr(iteration)`. minibatches > 1: each pass splits the tasks into that many groups, in an order drawn
    from the iteration's own generator (PPO's minibatch epochs; every rank splits its own share alike)."""

    def __init__(self, optimizer: FlatAdam | FlatSGD, lr: Callable[[int], float], epochs: int = 1,
                 grad_clip: float = 0.0, minibatches: int = 1):
        self.optimizer, self.lr, self.epochs, self.grad_clip = optimizer, lr, int(epochs), float(grad_clip)
        self.minibatches = int(minibatches)

    def _parts(self, batch: Batch, iteration: int, epoch: int) -> list[Batch]:
        if self.minibatches == 1:
            return [batch]
        n = batch.num_tasks
        if n < self.minibatches:
            raise ValueError(f"outer.minibatches {self.minibatches} is more than the {n} tasks of a batch")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(iteration * 1009 + epoch))
        return [batch.take(part) for part in order.tensor_split(self.minibatches)]

    def step(self, flat: torch.Tensor, batch: Batch, problem: MetaProblem, iteration: int) -> dict[str, float]:
        out: dict[str, float] = {}
        for epoch in range(self.epochs):
            for i, part in enumerate(self._parts(batch, iteration, epoch)):
                g, loss, metrics = problem.gradient(flat, part)
                norm = float(torch.linalg.vector_norm(g))
                loss_f = float(loss)
                _check_finite(loss_f, norm)
                if self.grad_clip > 0 and norm > self.grad_clip:  # clip_grad_norm_'s rule, with the norm at hand
                    g = g * (self.grad_clip / (norm + 1e-6))
                self.optimizer.step(g, self.lr(iteration))
                if epoch == 0 and i == 0:
                    out = {"meta_loss": loss_f, "grad_norm": norm, **{k: float(v) for k, v in metrics.items()}}
                elif epoch == self.epochs - 1 and self.epochs > 1:
                    out["meta_loss_last_epoch"] = loss_f
                    out.update({f"{k}_last_epoch": float(v) for k, v in metrics.items() if k == "kl"})
        return out

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)


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


class TRPOStep:
    """TRPO's outer step on the learner's loss; its metrics must hold "kl", the mean KL(pi_old || pi).
    Settings (an OuterConfig): max_kl, cg_iters, cg_damping, ls_max_steps, ls_backtrack, hvp_task_fraction and
    hvp_episode_fraction (the tasks, and the episodes of each, whose KL drives the CG's products: rllab's
    subsampled Fisher; episodes with gauss_newton only), hvp ("autograd":
    double backward through the adaptation; "gauss_newton": J^T F J v, see GaussNewtonKL).

    The line search's first trial: the full step, whose quadratic KL model is max_kl, shrunk by the last accepted
    step's ratio of measured to modelled KL when the model fell short (KL ~ step^2, so by 1 / sqrt(ratio), with a
    2% margin): with a subsampled Fisher the model is often a few percent low, and the full step would be
    rejected every iteration at the cost of one more adaptation and forward. The ratio is state (checkpointed)."""

    def __init__(self, settings: "OuterConfig"):
        if settings.hvp_episode_fraction < 1 and settings.hvp != "gauss_newton":
            raise ValueError("hvp_episode_fraction < 1 needs hvp gauss_newton: autograd would adapt on the kept "
                             "support episodes only, away from the policy that sampled the query")
        self.s = settings
        self.kl_ratio = 1.0  # measured / modelled KL of the last accepted step

    def step(self, flat: torch.Tensor, batch: Batch, problem: MetaProblem, iteration: int = 0) -> dict[str, float]:
        s, reduce = self.s, problem.reduce
        x = flat.detach().clone().requires_grad_(True)
        loss, metrics = problem.loss(x, batch)
        g = torch.autograd.grad(loss, x, retain_graph=s.hvp == "autograd")[0]  # the autograd HVPs reuse the graph
        g, loss_all = reduce(g, loss.detach())
        _check_finite(float(loss_all), float(g.norm()))
        if s.hvp == "gauss_newton":
            curvature = GaussNewtonKL(problem.learner, detach(problem.layout.unflatten(x)), self._hvp_batch(batch))

            def Hv(v: torch.Tensor) -> torch.Tensor:
                hv = curvature(problem.layout.unflatten(v))
                return reduce(problem.layout.flatten(hv))[0] + s.cg_damping * v
        else:
            sub = self._hvp_batch(batch)
            kl = metrics["kl"] if sub is batch else problem.loss(x, sub)[1]["kl"]
            grad_kl = torch.autograd.grad(kl, x, create_graph=True)[0]

            def Hv(v: torch.Tensor) -> torch.Tensor:
                return reduce(torch.autograd.grad(grad_kl @ v, x, retain_graph=True)[0])[0] + s.cg_damping * v

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
                    break
                frac *= s.ls_backtrack
        return info

    def _hvp_batch(self, batch: Batch) -> Batch:
        """Evenly spaced, fixed subsets of the tasks and of each task's episodes (rllab's subsampled Fisher), or
        the whole batch."""
        n = batch.num_tasks
        n_sub = max(1, round(self.s.hvp_task_fraction * n))
        if n_sub < n:
            batch = batch.take(torch.linspace(0, n - 1, n_sub).round().long())
        return batch if self.s.hvp_episode_fraction >= 1 else episode_subset(batch, self.s.hvp_episode_fraction)

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
    return Batch(batch.tasks, tree_map(pick, batch.support), tree_map(pick, batch.query))


class GaussNewtonKL:
    """Products with the Hessian of the mean KL(pi_old || pi_phi(theta)) at the params where pi_old = pi_phi.

    There the KL's gradient in phi vanishes, so H = mean_i J_i^T F_i J_i exactly, with J_i = d phi_i / d theta
    = I - alpha H_inner,i (I for first order; symmetric) and F_i the KL Hessian in phi. The graphs are built
    once per TRPO step (theta copied per task, each task's inner gradient kept with its graph; the KL's gradient
    at phi likewise), so each product is three double-backward passes over the data (one for first order):
    no forward is recomputed inside conjugate gradient and no third-order backward through the adaptation is
    taken. For one inner step with a fixed step size (MAML)."""

    def __init__(self, learner: Learner, meta: dict, batch: Batch):
        objective, self.first_order = learner.objective, learner.first_order
        self.lr = learner.step_size(meta, 0)
        support, query = at(batch.support, 0), at(batch.query, 0)
        theta = meta["theta"]
        self.names = list(theta)
        n = tree_flatten(support)[0][0].shape[0]
        self.theta = [theta[k].detach().unsqueeze(0).repeat(n, *([1] * theta[k].dim())).requires_grad_()
                      for k in self.names]
        with torch.enable_grad():
            inner = vmap(objective.inner_loss)(dict(zip(self.names, self.theta)), support).sum()
            self.inner_grad = torch.autograd.grad(inner, self.theta, create_graph=not self.first_order)
            self.phi = [(t - self.lr[k] * g).detach().requires_grad_()
                        for k, t, g in zip(self.names, self.theta, self.inner_grad)]
            kl = vmap(lambda p, q: objective.outer_loss(p, q)[1]["kl"])(dict(zip(self.names, self.phi)), query).sum()
            self.kl_grad = torch.autograd.grad(kl, self.phi, create_graph=True)

    @staticmethod
    def _product(grads, leaves, vectors) -> tuple[torch.Tensor, ...]:
        """(d/d leaves) sum grads . vectors: each task's Hessian times its own vector."""
        return torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, vectors)), leaves, retain_graph=True)

    def _jacobian(self, vectors):
        """J_i v_i = v_i - alpha H_inner,i v_i (J is symmetric: also J^T)."""
        if self.first_order:
            return vectors
        hv = self._product(self.inner_grad, self.theta, vectors)
        return [v - self.lr[k] * h for k, v, h in zip(self.names, vectors, hv)]

    def __call__(self, v: dict) -> dict:
        per_task = [v["theta"][k].unsqueeze(0).expand_as(t) for k, t in zip(self.names, self.theta)]
        fjv = self._product(self.kl_grad, self.phi, self._jacobian(per_task))
        return {"theta": {k: x.mean(0) for k, x in zip(self.names, self._jacobian(fjv))}}
