"""ANIL, almost no inner loop (Raghu et al. 2020): MAML whose inner steps adapt only the network's head (its
last, linear layer); the body is meta-learned by the outer step and shared by every task as it is.

    phi_0     = theta = (body, head)
    phi_{s+1} = (body, head_s - alpha * grad_head L_inner(body, head_s; support_s))
    L         = sum_s w_s L_outer(phi_s, query_s),   meta-gradient in body and head (second order unless
                first_order), outer step Adam / SGD (RL: also PPO, TRPO with autograd products)

The inner step is MAML's (algorithms/maml.py) restricted to the head's parameters, which the network names
(`head_names`).
"""
from __future__ import annotations

from metarl.algorithms.maml import MAML
from metarl.algorithms.rules import Algorithm, check_step_loss, step_loss_weights
from metarl.core.errors import ConfigError


def check(cfg, family) -> None:
    if any(not x > 0 for x in cfg.learner.step_lr_scales):
        raise ConfigError(f"learner.step_lr_scales must be positive, got {list(cfg.learner.step_lr_scales)}")
    check_step_loss(cfg)


def build(cfg, objective, model, init, executor) -> MAML:
    L = cfg.learner
    head = tuple(getattr(model, "head_names", ()))
    if not head:
        raise ValueError(f"learner.algo anil adapts the network's head: {type(model).__name__} names none")
    return MAML(objective, init, inner_lr=L.inner_lr, inner_steps=L.inner_steps, first_order=L.first_order,
                step_lr_scales=L.step_lr_scales, step_loss_weights=step_loss_weights(cfg), adapt_only=head,
                executor=executor)


SPEC = Algorithm(
    name="anil", title="ANIL", build=build, check=check,
    summary="ANIL: MAML with the inner loop on the head only (Raghu et al. 2020)",
    reads=tuple(f"learner.{k}" for k in ("inner_steps", "inner_lr", "first_order", "step_lr_scales", "step_loss",
                                         "step_loss_weights", "estimator")) + ("train.recompute_inner_steps",))
