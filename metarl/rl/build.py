"""Build the pieces of a meta-RL run from an `RLConfig`."""
from __future__ import annotations

from dataclasses import dataclass

import torch

import envs
from envs.batched_registry import batched_env_spec, make_batched_env
from metarl.errors import ConfigError
from metarl.models import parameters_of
from metarl.rl.config import RLConfig
from metarl.rl.maml_rl import MAMLRL
from metarl.rl.policy import GaussianMLPPolicy
from metarl.rl.reptile_rl import ReptileRL
from metarl.rl.trpo import TRPOSettings


@dataclass
class RLRun:
    """What a trainer or an evaluator needs: the task distribution, the policy and the meta-learner."""

    dist: envs.TaskDistribution
    policy: GaussianMLPPolicy
    algo: MAMLRL | ReptileRL
    horizon: int
    device: torch.device


def build_rl(cfg: RLConfig) -> RLRun:
    spec = batched_env_spec(cfg.env.name)
    dist = envs.make_task_distribution(spec.task_distribution)
    horizon = cfg.env.horizon or spec.horizon
    device = torch.device(cfg.device)
    probe = make_batched_env(cfg.env.name, 1, 1, horizon, device=device)
    obs_dim = int(probe.single_observation_space.shape[0])
    act_dim = int(probe.single_action_space.shape[0])
    gen = torch.Generator().manual_seed(cfg.seed)
    policy = GaussianMLPPolicy(obs_dim, act_dim, cfg.policy.hidden, cfg.policy.activation, cfg.policy.init_std,
                               generator=gen, last_layer_scale=cfg.policy.last_layer_scale,
                               action_scale=cfg.policy.action_scale).to(device)
    init = parameters_of(policy)
    a = cfg.algo
    if a.algo in ("maml_trpo", "maml_ppo"):
        trpo = TRPOSettings(a.max_kl, a.cg_iters, a.cg_damping, a.ls_max_steps, a.ls_backtrack, a.hvp_task_fraction, a.hvp)
        algo = MAMLRL(policy, init, a.inner_lr, a.first_order, a.estimator, "trpo" if a.algo == "maml_trpo" else "ppo",
                      trpo, a.ppo_clip, a.ppo_epochs, a.ppo_lr, a.inner_steps, tuple(a.step_loss_weights),
                      a.learn_inner_lr, tuple(a.step_lr_scales))
    elif a.algo == "reptile":
        algo = ReptileRL(policy, init, a.inner_lr, a.inner_steps, a.reptile_epsilon, a.estimator)
    else:  # the config's Literal already rejects this; kept for direct callers
        raise ConfigError(f"unknown algo.algo {a.algo!r}: expected maml_trpo, maml_ppo or reptile")
    return RLRun(dist, policy, algo, horizon, device)
