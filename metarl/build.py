"""Config -> objects, for every task family: the one place that maps names to classes.

    run = build(cfg)       task family and distribution, model (learner network or policy), objective,
                           learner, experience source; run.outer_step(flat) the outer step
Everything a config can get wrong is raised here as a one-line ConfigError, before anything is written.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

import envs
from metarl.config import Config
from metarl.errors import ConfigError
from metarl.experience import Source, SupervisedSource
from metarl.learners import MAML, ArchitectureSearch, ExampleReweighting, Learner, LSTMMetaLearner, Reptile
from metarl.models import MLP, parameters_of
from metarl.optim import FlatAdam, FlatSGD, cosine_lr
from metarl.outer import GradientStep, TRPOStep

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available (this process's GPU under torchrun), else cpu; a bad name is a ConfigError."""
    from metarl.distributed import local_rank

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device: unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {name!r} requested but CUDA is not available here (use --device cpu or auto)")
        if dev.index is None:
            dev = torch.device("cuda", local_rank() % torch.cuda.device_count())
    elif dev.type != "cpu":
        raise ConfigError(f"device: {name!r} is not supported: use auto, cpu, cuda or cuda:N")
    return dev


@dataclass
class Run:
    cfg: Config
    family: envs.TaskFamily
    dist: Any
    model: torch.nn.Module
    objective: Any
    learner: Learner
    source: Source
    device: torch.device

    def outer_step(self, flat: torch.Tensor) -> GradientStep | TRPOStep:
        """The outer step of the config, updating `flat` (the meta-parameter vector) in place."""
        o, iterations = self.cfg.outer, self.cfg.train.iterations
        if o.optimizer == "trpo":
            return TRPOStep(o)
        lr = (lambda it: cosine_lr(o.lr, it, iterations)) if o.lr_decay == "cosine" else (lambda it: o.lr)
        return GradientStep(FlatSGD(flat) if o.optimizer == "sgd" else FlatAdam(flat), lr, o.epochs, o.grad_clip,
                            o.minibatches)


def build(cfg: Config, rank: int = 0, world: int = 1, device: torch.device | None = None) -> Run:
    device = device or resolve_device(cfg.device)
    dtype = DTYPES[cfg.train.dtype]
    fam = envs.family(cfg.task.name)
    try:
        dist = fam.distribution(**cfg.task.options)
    except (TypeError, ValueError, KeyError, FileNotFoundError) as e:
        raise ConfigError(f"task {fam.name} (task.options): {e.args[0] if e.args else e}") from None
    if hasattr(dist, "dtype"):
        dist.dtype = dtype
    init_gen = torch.Generator().manual_seed(cfg.seed)
    try:
        if fam.is_rl and cfg.learner.algo == "rl2":
            model, objective = _recurrent_policy(cfg, fam, dist, init_gen, device, dtype)
        elif fam.is_rl:
            model, objective = _policy(cfg, fam, dist, init_gen, device, dtype)
        else:
            model, objective = _network(cfg, dist, init_gen)
        if hasattr(dist, "check_num_tasks"):  # task distributions whose batches have a shape (Meta-World's skills)
            tc = cfg.train
            dist.check_num_tasks(tc.meta_batch_size // world, "train", "train.meta_batch_size (per rank)")
            dist.check_num_tasks(cfg.eval.num_tasks, "test", "eval.num_tasks")
            if tc.eval_every:
                dist.check_num_tasks(min(tc.eval_tasks, cfg.eval.num_tasks), "test", "train.eval_tasks")
        learner = _learner(cfg, objective, parameters_of(model, dtype=dtype, device=device))
        learner.batching, learner.chunk_size = task_batching(cfg, device), cfg.train.chunk_size
        if cfg.train.recompute_inner_steps:
            if cfg.learner.algo != "maml" or learner.batching not in ("loop", "threads"):
                raise ValueError("train.recompute_inner_steps needs learner.algo maml and train.task_batching "
                                 f"loop or threads (here: {cfg.learner.algo}, {learner.batching})")
            learner.recompute_steps = True
        if cfg.model.arch == "conv" and learner.batching in ("loop", "threads"):
            model.layout = "nchw"  # plain convolutions for one task at a time
        source = _source(cfg, fam, dist, objective, model, device, dtype, rank, world)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return Run(cfg, fam, dist, model, objective, learner, source, device)


def task_batching(cfg: Config, device: torch.device) -> str:
    """train.task_batching, with auto resolved: for conv nets on CPU one task per core side by side (a
    grouped convolution over per-task weights is slower there than plain ones, and small convolutions
    parallelise poorly inside one op: bench_meta_gradient.py --case omniglot), one vmapped call otherwise."""
    if cfg.train.task_batching != "auto":
        return cfg.train.task_batching
    return "threads" if device.type == "cpu" and cfg.model.arch in ("conv", "cells") else "vmap"


def _network(cfg: Config, dist, generator: torch.Generator):
    from metarl.objectives import SupervisedObjective

    m = cfg.model
    wants = {"mlp": 1, "conv": 3, "cells": 3}[m.arch]  # vectors, or (channels, height, width) images
    if len(dist.input_shape) != wants:
        raise ValueError(f"model.arch {m.arch} needs {'vector' if wants == 1 else 'image'} inputs; {dist.name}'s "
                         f"are shaped {tuple(dist.input_shape)}: use model.arch {'conv' if wants == 1 else 'mlp'}")
    if m.arch == "mlp":
        model = MLP(int(torch.Size(dist.input_shape).numel()), m.hidden, dist.output_dim, generator=generator,
                    input_scale=m.input_scale, activation=m.activation, residual=m.residual, norm=m.norm, gated=m.gated)
    elif m.arch == "cells":
        from metarl.darts import CellNetwork

        model = CellNetwork(dist.input_shape[0], dist.output_dim, m.channels, m.cells, m.nodes, m.genotype or None,
                            generator=generator)
    else:
        from metarl.convnet import ConvNet

        model = ConvNet(in_channels=dist.input_shape[0], ways=dist.output_dim, channels=m.channels, generator=generator)
    return model, SupervisedObjective(model, dist.loss)


def _spaces(cfg: Config, fam, dist) -> tuple[int, int]:
    """(observation, action) sizes of the family's env."""
    probe = fam.batched_env(dist, 1, 1, cfg.task.horizon or fam.horizon, device="cpu",
                            **({"backend": "cpu"} if fam.backends else {}))
    obs_dim, act_dim = int(probe.single_observation_space.shape[0]), int(probe.single_action_space.shape[0])
    probe.close()
    return obs_dim, act_dim


def _recurrent_policy(cfg: Config, fam, dist, generator: torch.Generator, device: torch.device, dtype: torch.dtype):
    from metarl.learners.rl2 import RecurrentObjective
    from metarl.rl.recurrent import GRUGaussianPolicy

    m = cfg.model
    policy = GRUGaussianPolicy(*_spaces(cfg, fam, dist), m.hidden[0], m.init_std, generator=generator,
                               last_layer_scale=m.last_layer_scale, action_scale=m.action_scale).to(device, dtype)
    return policy, RecurrentObjective(policy, cfg.outer.ppo_clip)


def _policy(cfg: Config, fam, dist, generator: torch.Generator, device: torch.device, dtype: torch.dtype):
    from metarl.rl.objective import RLObjective
    from metarl.rl.policy import GaussianMLPPolicy

    obs_dim, act_dim = _spaces(cfg, fam, dist)
    m = cfg.model
    policy = GaussianMLPPolicy(obs_dim, act_dim, m.hidden, m.activation, m.init_std, generator=generator,
                               last_layer_scale=m.last_layer_scale, action_scale=m.action_scale).to(device, dtype)
    clip = cfg.outer.ppo_clip if cfg.outer.optimizer == "ppo" else 0.0
    return policy, RLObjective(policy, cfg.learner.estimator, clip=clip)


def _learner(cfg: Config, objective, init: dict) -> Learner:
    lc = cfg.learner
    weights = lc.step_loss_weights or ((1.0,) * lc.inner_steps if lc.step_loss == "mean" else ())
    if lc.algo == "maml":
        return MAML(objective, init, inner_lr=lc.inner_lr, inner_steps=lc.inner_steps, first_order=lc.first_order,
                    learn_inner_lr=lc.learn_inner_lr, inner_lr_per_step=lc.inner_lr_per_step,
                    learn_step_scale=lc.learn_step_scale, step_lr_scales=lc.step_lr_scales, step_loss_weights=weights,
                    hypergradient=lc.hypergradient, truncate_steps=lc.truncate_steps,
                    implicit_lambda=lc.implicit_lambda, implicit_cg_steps=lc.implicit_cg_steps,
                    augmentation=lc.augmentation, augment_magnitudes=lc.augment_magnitudes)
    if lc.algo == "darts":
        return ArchitectureSearch(objective, init, lc.inner_lr, lc.first_order)
    if lc.algo == "reweight":
        return ExampleReweighting(objective, init, lc.weighting, lc.inner_lr, lc.weight_net_hidden,
                                  generator=torch.Generator().manual_seed(cfg.seed), augmentation=lc.augmentation,
                                  augment_magnitudes=lc.augment_magnitudes)
    if lc.algo == "rl2":
        from metarl.learners.rl2 import RL2

        return RL2(objective, init)
    if lc.algo == "reptile":
        return Reptile(objective, init, inner_lr=lc.inner_lr, inner_steps=lc.inner_steps, step_lr_scales=lc.step_lr_scales)
    return LSTMMetaLearner(objective, init, inner_steps=lc.inner_steps, hidden_size=lc.lstm_hidden,
                           first_order=lc.first_order, step_loss_weights=weights)


def _source(cfg: Config, fam, dist, objective, model, device, dtype, rank: int, world: int) -> Source:
    t, e, B = cfg.task, cfg.eval, cfg.train.meta_batch_size
    if not fam.is_rl:
        return SupervisedSource(dist, objective, B, cfg.seed, device, t.k_support, t.k_query, e.k_support, e.k_query,
                                rank, world, cfg.model.batch_norm if cfg.model.arch == "conv" else None,
                                augment=cfg.learner.augmentation != "none")
    r = cfg.rl
    if cfg.learner.algo == "rl2":
        from metarl.rl.trials import TrialSource

        return TrialSource(fam, dist, model, B, cfg.seed, device, r.episodes_per_task, r.trial_episodes,
                           t.horizon or fam.horizon, dtype, r.gamma, r.gae_lambda, r.normalize_advantages, r.backend,
                           e.episodes_per_task, rank, world)
    from metarl.rl.source import RolloutSource

    return RolloutSource(fam, dist, model, B, cfg.seed, device, r.episodes_per_task, t.horizon or fam.horizon, dtype,
                         r.gamma, r.gae_lambda, r.normalize_advantages, r.compile_sampler, r.backend,
                         e.episodes_per_task, rank, world)
