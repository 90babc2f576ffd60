"""RL² (Duan et al. 2016): the learner is a recurrent policy (metarl.nets.policies.GRUGaussianPolicy); adapting
to a task is its memory reading the trial so far, so there is no inner gradient step. The meta-parameters are
the GRU policy's weights, trained with PPO on whole trials (metarl.rl.source collects them):

    per iteration: T tasks x E trials of N episodes (rl.trial_episodes), memory carried across a trial's
                   episodes, advantages by GAE across them
    loss(theta) = -mean over valid steps of min(ratio_t A_t, clip(ratio_t, 1 - eps, 1 + eps) A_t),
                  ratio_t = pi_theta(a_t | x_1..x_t) / pi_old(a_t | x_1..x_t)        (metarl.rl.objective)
    with the recurrence re-run over each trial's kept inputs (h_0 = 0), all trials of all tasks in one batch;
    outer step: PPO (outer.epochs x outer.minibatches Adam steps per batch)

Evaluation scores the return of episode s of fresh trials as "after s steps" (in-context adaptation).
"""
from __future__ import annotations

from typing import Any

import torch

from metarl.algorithms.base import InContextLearner, as_steps, at
from metarl.algorithms.rules import Algorithm
from metarl.core.errors import ConfigError
from metarl.core.params import MetaParams, Metrics


class RL2(InContextLearner):
    def __init__(self, objective, init_params, trial_episodes: int = 2, executor=None):
        super().__init__(objective, init_params, executor)
        self.trial_episodes = int(trial_episodes)

    def meta_loss(self, meta: MetaParams, support: Any, query: Any) -> tuple[torch.Tensor, Metrics]:
        """PPO's loss on the trials of every task at once (they share theta: one batch, no per-task map)."""
        return self.objective.outer_loss(meta["theta"], at(as_steps(support), 0))


def check(cfg, family) -> None:
    if len(cfg.model.hidden) != 1:
        raise ConfigError(f"learner.algo rl2: model.hidden is the GRU's width, one value (e.g. [64]), got "
                          f"{list(cfg.model.hidden)}")
    if not cfg.rl.trial_episodes > 0:
        raise ConfigError(f"rl.trial_episodes must be positive, got {cfg.rl.trial_episodes}")


def build(cfg, objective, model, init, executor) -> RL2:
    return RL2(objective, init, cfg.rl.trial_episodes, executor)


SPEC = Algorithm(name="rl2", title="RL²", build=build, check=check, kinds=("rl",), outer_steps=("ppo",), policy="gru",
                 in_context=True, reads=("rl.trial_episodes",),
                 summary="RL²: a recurrent policy that adapts in context, trained with PPO (Duan et al. 2016)")
