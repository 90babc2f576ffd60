"""What an algorithm's file declares beside its code (`Algorithm`), and the config rules several of them share.
Rules are checked once, when the config is read (metarl.run.validate), as one-line ConfigErrors."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from metarl.core.errors import ConfigError


@dataclass(frozen=True)
class Algorithm:
    name: str
    """learner.algo."""
    title: str
    """Its name in tables and plots (e.g. MAML, ProtoNets)."""
    summary: str
    """One line for --help and the README."""
    build: Callable[..., Any]
    """build(cfg, objective, model, init_params, executor) -> the learner."""
    reads: tuple[str, ...]
    """The algorithm-dependent config keys it reads (metarl.run.validate.ALGORITHM_KEYS); the others must stay
    at their defaults."""
    kinds: tuple[str, ...] = ("supervised", "rl")
    """The task families it learns: supervised, rl."""
    outer_steps: tuple[str, ...] = ()
    """The outer steps (outer.optimizer) it allows; empty: every one its task family allows."""
    policy: str = "mlp"
    """RL: the policy it acts with (mlp: a Gaussian MLP; gru: a recurrent Gaussian policy)."""
    check: Callable[[Any, Any], None] | None = None
    """check(cfg, family): the rules between the keys it reads (raise ConfigError)."""
    after_run: Callable[..., Any] | None = None
    """after_run(trainer, result, console_write) -> result: work after training (e.g. DARTS' retraining)."""
    in_context: bool = False
    """Adapts in context (a recurrent policy's memory), not by inner steps: trials, not steps, in the curves."""
    searches_cells: bool = False
    """Trains the searchable cell network (model.arch cells with no genotype)."""
    head_from_support: bool = False
    """Reads its classifier head off each task's support set, so a task may have fewer classes than the head has
    outputs (task families whose class count varies: `task_classes_vary`, e.g. Omniglot's train_ways)."""
    kl_curvature: bool = False
    """Its learner offers TRPO a KL Hessian-vector product cheaper than double backward (outer.hvp gauss_newton)."""


def get_path(cfg: Any, path: str) -> Any:
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def reject_set(cfg: Any, paths, reason: str) -> None:
    """A ConfigError for the first of `paths` set to anything but its default: the run would ignore it."""
    defaults = type(cfg)()
    for path in paths:
        if get_path(cfg, path) != get_path(defaults, path):
            raise ConfigError(f"{path} is not used with {reason}: remove it")


def check_step_loss(cfg: Any) -> None:
    """learner.step_loss_weights: one non-negative weight per inner step, a positive sum; it replaces step_loss."""
    L = cfg.learner
    w = L.step_loss_weights
    if w and (len(w) != L.inner_steps or min(w) < 0 or sum(w) <= 0):
        raise ConfigError(f"learner.step_loss_weights needs learner.inner_steps = {L.inner_steps} non-negative "
                          f"weights with a positive sum, got {list(w)}")
    if w:
        reject_set(cfg, ["learner.step_loss"], "learner.step_loss_weights set")


def step_loss_weights(cfg: Any) -> tuple[float, ...]:
    """The weights of the outer losses after steps 1..inner_steps that the config asks for (empty: the last)."""
    L = cfg.learner
    return tuple(L.step_loss_weights) or ((1.0,) * L.inner_steps if L.step_loss == "mean" else ())


def check_augmentation(cfg: Any, family) -> None:
    """learner.augmentation: on image tasks only (model.arch conv), four magnitudes."""
    L = cfg.learner
    if L.augmentation == "none":
        reject_set(cfg, ["learner.augment_magnitudes"], "learner.augmentation none")
        return
    if family.is_rl or cfg.model.arch != "conv":
        raise ConfigError("learner.augmentation needs an image task (model.arch conv)")
    if len(L.augment_magnitudes) != 4:
        raise ConfigError("learner.augment_magnitudes needs 4 values (rotation, log-scale, shear, translation), "
                          f"got {list(L.augment_magnitudes)}")
