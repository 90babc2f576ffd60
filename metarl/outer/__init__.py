"""The outer steps: how the meta-parameters move given a batch, all on one flat parameter vector
(outer.optimizer -> its `OuterStep` spec: the step it builds, the config keys it reads, the task families it
serves, the surrogate's clip its objective is built with, its rules)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from metarl.core.errors import ConfigError
from metarl.outer import gradient, ppo, trpo

_GRADIENT_KEYS = ("outer.lr", "outer.lr_decay", "outer.grad_clip", "outer.epochs", "outer.minibatches", "train.compile")


@dataclass(frozen=True)
class OuterStep:
    name: str
    summary: str
    build: Callable[[Any, Any], Any]
    """build(cfg, flat) -> the step, updating flat in place."""
    reads: tuple[str, ...]
    """The outer-step-dependent config keys it reads (metarl.run.validate.OUTER_KEYS)."""
    kinds: tuple[str, ...] = ("supervised", "rl")
    clip: Callable[[Any], float] = lambda cfg: 0.0
    """The clip of the policy-gradient surrogate it optimises (0: unclipped)."""
    check: Callable[[Any, Any], None] | None = None
    """check(cfg, algorithm spec): its rules."""


def _check_trpo(cfg, algorithm) -> None:
    o = cfg.outer
    if o.hvp == "gauss_newton" and not algorithm.kl_curvature:
        raise ConfigError(f"outer.hvp gauss_newton needs a learner that offers its KL curvature; learner.algo "
                          f"{algorithm.name} does not: use autograd")
    if o.hvp_episode_fraction < 1 and o.hvp != "gauss_newton":
        raise ConfigError("outer.hvp_episode_fraction needs outer.hvp gauss_newton (autograd would adapt on the "
                          "kept support episodes only, away from the policy that sampled the query)")


OUTER_STEPS: dict[str, OuterStep] = {s.name: s for s in (
    OuterStep("adam", "Adam on the meta-gradient", gradient.build_adam, _GRADIENT_KEYS),
    OuterStep("sgd", "SGD on the meta-gradient (Reptile's interpolation with lr = epsilon)", gradient.build_sgd,
              _GRADIENT_KEYS),
    OuterStep("ppo", "PPO: Adam epochs x minibatches on the clipped surrogate", ppo.build,
              _GRADIENT_KEYS + ("outer.ppo_clip",), kinds=("rl",), clip=lambda cfg: cfg.outer.ppo_clip),
    OuterStep("trpo", "TRPO: natural gradient within a KL bound, then a line search", trpo.build,
              tuple(f"outer.{k}" for k in ("max_kl", "cg_iters", "cg_damping", "ls_max_steps", "ls_backtrack",
                                            "hvp_task_fraction", "hvp_episode_fraction", "hvp")),
              kinds=("rl",), check=_check_trpo),
)}
