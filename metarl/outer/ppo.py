"""PPO's outer step (Schulman et al. 2017), as MAML-PPO and RL² use it:

    for epoch in 1..epochs:
        for part in minibatches of the batch's tasks (an order drawn from the iteration's own generator):
            L = -mean min(ratio A, clip(ratio, 1 - clip, 1 + clip) A)     (through the adaptation for MAML-PPO:
                                                                        the learner's meta_loss on the query)
            flat <- Adam(flat, grad L, lr(iteration))       (gradients all-reduced over ranks, clipped to grad_clip)

ratio = pi_theta / pi_old with pi_old the policy that collected the data; the clipped surrogate itself is
metarl.rl.objective.clipped_surrogate, which this step's objective is built with (`clip`).
"""
from __future__ import annotations

from typing import Callable

from metarl.core.numerics import FlatAdam
from metarl.outer.gradient import GradientStep, schedule


class PPOStep(GradientStep):
    def __init__(self, optimizer: FlatAdam, lr: Callable[[int], float], epochs: int = 5, grad_clip: float = 0.0,
                 minibatches: int = 1, clip: float = 0.2):
        super().__init__(optimizer, lr, epochs, grad_clip, minibatches)
        self.clip = float(clip)


def build(cfg, flat) -> PPOStep:
    o = cfg.outer
    return PPOStep(FlatAdam(flat), schedule(o.lr, o.lr_decay, cfg.train.iterations), o.epochs, o.grad_clip,
                   o.minibatches, o.ppo_clip)
