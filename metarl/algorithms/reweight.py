"""Learning which examples to trust: example weights meta-learned on a small clean validation set, the same
bilevel core as MAML with the network's own weights as the inner variable.

For one batch (support: training examples, possibly mislabelled; query: clean validation examples), with
l_i(theta) the loss of training example i and alpha the lookahead step (learner.inner_lr):

    none   the plain baseline: direction = grad_theta mean_i l_i(theta)
    l2rw   learning to reweight (Ren et al. 2018): eps = 0,
               theta'(eps) = theta - alpha grad_theta sum_i eps_i l_i(theta)
               w_i = max(0, -d L_val(theta'(eps)) / d eps_i) = max(0, alpha grad L_val(theta) . grad l_i(theta)),
               normalised to sum 1 (all zero: no update);  direction = grad_theta sum_i w_i l_i(theta)
    mwn    Meta-Weight-Net (Shu et al. 2019): w_i = V(l_i; psi), V a small MLP of the loss value with a
           sigmoid output (meta-parameter group "weight_net"),
               theta'(psi) = theta - alpha grad_theta mean_i w_i l_i(theta)
               direction for psi = grad_psi L_val(theta'(psi)), for theta = grad_theta mean_i w_i l_i(theta)

With `augmentation` fixed or learned the training images are seen under a random affine transform (metarl.nets.augment)
with magnitudes m; learned: m is the meta-parameter group "augment", moved along the lookahead's hypergradient
    theta'(m) = theta - alpha grad_theta mean_i w_i l_i(theta; x_i under m),   direction for m = grad_m L_val(theta'(m))
(weighting none or mwn, mwn's weights held at their values; l2rw's lookahead starts at eps = 0, where theta' does
not depend on m).

The outer step (Adam / SGD) moves theta and psi along these directions, like Reptile's update it is not the
gradient of one loss. Nothing adapts per task at test time: evaluation reports the metrics of theta (step 0).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from metarl.algorithms.base import InnerLoopLearner, as_steps, at, sgd_step
from metarl.algorithms.rules import Algorithm, check_augmentation, reject_set
from metarl.core.errors import ConfigError
from metarl.core.executor import TaskExecutor
from metarl.core.params import MetaParams, Params
from metarl.nets.augment import augmented, current_magnitudes, magnitudes_tensor

WEIGHTINGS = ("l2rw", "mwn", "none")


class ExampleReweighting(InnerLoopLearner):
    def __init__(self, objective, init_params: Params, weighting: str = "l2rw", inner_lr: float = 0.1,
                 weight_net_hidden: int = 100, generator: torch.Generator | None = None, augmentation: str = "none",
                 augment_magnitudes: tuple[float, ...] = (0.2, 0.1, 0.1, 0.1), executor: TaskExecutor | None = None):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
        if not hasattr(objective, "example_losses"):
            raise ValueError("example reweighting needs an objective with per-example losses (supervised)")
        super().__init__(objective, init_params, executor)
        self.augmentation, self.augment_magnitudes = augmentation, tuple(float(m) for m in augment_magnitudes)
        self.weighting, self.inner_lr = weighting, float(inner_lr)
        ref = next(iter(self._init.values()))
        g = generator or torch.Generator().manual_seed(0)
        h = int(weight_net_hidden)
        # V(l) = sigmoid(w2 . relu(w1 l + b1) + b2), started near 0.5 for every loss
        self._weight_net = {"w1": torch.rand(h, generator=g) * 2 - 1, "b1": torch.rand(h, generator=g) * 0.2,
                            "w2": (torch.rand(h, generator=g) * 2 - 1) * 0.01, "b2": torch.zeros(())}
        self._weight_net = {k: v.to(ref) for k, v in self._weight_net.items()}

    def init_meta_params(self) -> MetaParams:
        meta = super().init_meta_params()
        if self.weighting == "mwn":
            meta["weight_net"] = {k: v.clone() for k, v in self._weight_net.items()}
        if self.augmentation == "learned":
            meta["augment"] = {"magnitudes": magnitudes_tensor(self.augment_magnitudes, next(iter(self._init.values())))}
        return meta

    def _magnitudes(self, meta: MetaParams) -> torch.Tensor | None:
        return current_magnitudes(meta, self.augmentation, self.augment_magnitudes)

    def step(self, meta: MetaParams, params: Params, data: Any, s: int) -> Params:
        """A plain SGD step on the support loss (the protocol's step; evaluation reports step 0)."""
        return sgd_step(self.objective, params, augmented(data, self._magnitudes(meta)), self.inner_lr)

    @staticmethod
    def example_weights(weight_net: Params, losses: torch.Tensor) -> torch.Tensor:
        """V(l_i; psi) for a vector of loss values."""
        hidden = F.relu(losses[:, None] * weight_net["w1"] + weight_net["b1"])
        return torch.sigmoid(hidden @ weight_net["w2"] + weight_net["b2"])

    def meta_gradient(self, meta: MetaParams, support: Any, query: Any):
        return self.executor.mean_over_tasks(self._one, meta, at(as_steps(support), 0), at(as_steps(query), 0))

    def _lookahead(self, theta: Params, training_loss: torch.Tensor, val: Any) -> torch.Tensor:
        """L_val(theta - alpha grad_theta training_loss), differentiable in whatever the training loss depends on."""
        g = torch.autograd.grad(training_loss, list(theta.values()), create_graph=True)
        return self.objective.inner_loss({k: theta[k] - self.inner_lr * d for k, d in zip(theta, g)}, val)

    def _one(self, meta: MetaParams, train: Any, val: Any):
        theta = {k: v.requires_grad_() for k, v in meta["theta"].items()}
        names = list(theta)
        learned = {"magnitudes": meta["augment"]["magnitudes"].requires_grad_()} if self.augmentation == "learned" \
            else {}
        with torch.enable_grad():
            magnitudes = learned["magnitudes"] if learned else self._magnitudes(meta)
            losses = self.objective.example_losses(theta, augmented(train, magnitudes))
            metrics: dict[str, torch.Tensor] = {}
            if self.weighting == "l2rw":
                eps = torch.zeros_like(losses, requires_grad=True)
                val_loss = self._lookahead(theta, (eps * losses).sum(), val)
                w = torch.clamp(-torch.autograd.grad(val_loss, eps)[0], min=0).detach()
                weights = w / w.sum() if w.sum() > 0 else w
                metrics["val_loss"] = val_loss.detach()
            else:  # none (uniform) or mwn (V(l_i; psi)): a lookahead when psi or the magnitudes are learned
                psi = {k: v.requires_grad_() for k, v in meta["weight_net"].items()} if self.weighting == "mwn" else {}
                w = self.example_weights(psi, losses.detach()) if psi else None
                weights = w.detach() / len(losses) if psi else torch.full_like(losses, 1.0 / len(losses))
                if psi or learned:
                    val_loss = self._lookahead(theta, (w * losses).mean() if psi else losses.mean(), val)
                    # kept with learned magnitudes: the direction below goes back through the same training losses
                    meta_grads = torch.autograd.grad(val_loss, [*psi.values(), *learned.values()],
                                                     retain_graph=bool(learned))
                    psi_grads, aug_grads = dict(zip(psi, meta_grads[:len(psi)])), dict(zip(learned, meta_grads[len(psi):]))
                    metrics["val_loss"] = val_loss.detach()
            direction = torch.autograd.grad((weights * losses).sum(), [theta[k] for k in names])
        grads = {"theta": dict(zip(names, direction))}
        if self.weighting == "mwn":
            grads["weight_net"] = psi_grads
        if learned:
            grads["augment"] = aug_grads
            for name, m in zip(("rotation", "log_scale", "shear", "shift"), learned["magnitudes"].detach()):
                metrics[f"augment_{name}"] = m.abs()
        metrics["weight_spread"] = (weights * len(losses)).std().detach()  # 0 when every example counts alike
        return grads, losses.mean().detach(), metrics


def check(cfg, family) -> None:
    L = cfg.learner
    check_augmentation(cfg, family)
    if L.augmentation == "learned" and L.weighting == "l2rw":
        raise ConfigError("learner.augmentation learned with learner.algo reweight needs weighting none or mwn "
                          "(l2rw's lookahead is taken at zero weights, where it does not depend on the augmentation)")
    if L.weighting != "mwn":
        reject_set(cfg, ["learner.weight_net_hidden"], f"learner.weighting {L.weighting}")


def build(cfg, objective, model, init, executor) -> ExampleReweighting:
    L = cfg.learner
    return ExampleReweighting(objective, init, L.weighting, L.inner_lr, L.weight_net_hidden,
                              generator=torch.Generator().manual_seed(cfg.seed), augmentation=L.augmentation,
                              augment_magnitudes=L.augment_magnitudes, executor=executor)


SPEC = Algorithm(name="reweight", title="Example reweighting", build=build, check=check, kinds=("supervised",),
                 summary="learned example weights on a clean validation set (weighting: l2rw, mwn, none)",
                 reads=tuple(f"learner.{k}" for k in ("inner_lr", "weighting", "weight_net_hidden", "augmentation",
                                                      "augment_magnitudes")))
