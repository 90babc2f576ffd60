"""Config -> objects, for every task family and algorithm: the registries say what to build, this wires it.

    run = build(cfg)       task family and distribution, executor, model (network or policy), objective,
                           learner (the algorithm's spec builds it), experience source; run.outer_step(flat)
Everything a config can get wrong is raised here as a one-line ConfigError, before anything is written.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

import envs
from metarl.algorithms import ALGORITHMS, algorithm
from metarl.algorithms.base import Learner
from metarl.algorithms.rules import Algorithm
from metarl.core.errors import ConfigError
from metarl.core.executor import TaskExecutor
from metarl.core.heap import keep_freed_memory
from metarl.core.source import Source
from metarl.nets import parameters_of
from metarl.outer import OUTER_STEPS, OuterStep
from metarl.run.config import Config

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available (this process's GPU under torchrun), else cpu; a bad name is a ConfigError."""
    from metarl.run.distributed import local_rank

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
    algorithm: Algorithm
    outer: OuterStep
    dist: Any
    model: torch.nn.Module
    objective: Any
    learner: Learner
    source: Source
    device: torch.device

    def outer_step(self, flat: torch.Tensor):
        """The outer step of the config, updating `flat` (the meta-parameter vector) in place."""
        return self.outer.build(self.cfg, flat)


def task_batching(cfg: Config, device: torch.device) -> str:
    """train.task_batching, with auto resolved: for conv nets on CPU one task per core side by side (a
    grouped convolution over per-task weights is slower there than plain ones, and small convolutions
    parallelise poorly inside one op: bench_meta_gradient.py --case omniglot), one vmapped call otherwise."""
    if cfg.train.task_batching != "auto":
        return cfg.train.task_batching
    return "threads" if device.type == "cpu" and cfg.model.arch in ("conv", "cells") else "vmap"


def apply_process_settings(cfg: Config) -> None:
    """The settings of the whole process that a run's config makes (training and evaluating a checkpoint
    alike): torch's thread count and whether freed memory stays in the process."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if cfg.train.keep_freed_memory:
        keep_freed_memory()


def build(cfg: Config, rank: int = 0, world: int = 1, device: torch.device | None = None) -> Run:
    device = device or resolve_device(cfg.device)
    dtype = DTYPES[cfg.train.dtype]
    fam, spec, outer = envs.family(cfg.task.name), algorithm(cfg.learner.algo), OUTER_STEPS[cfg.outer.optimizer]
    try:
        dist = fam.distribution(**cfg.task.options)
    except (TypeError, ValueError, KeyError, FileNotFoundError) as e:
        raise ConfigError(f"task {fam.name} (task.options): {e.args[0] if e.args else e}") from None
    if hasattr(dist, "dtype"):
        dist.dtype = dtype
    if getattr(dist, "task_classes_vary", False) and not spec.head_from_support:
        readers = ", ".join(s.name for s in ALGORITHMS.values() if s.head_from_support)
        raise ConfigError(f"task {fam.name} (task.options): its tasks do not all have the head's {dist.output_dim} "
                          f"classes; a fixed head cannot learn them: learner.algo {readers}")
    init_gen = torch.Generator().manual_seed(cfg.seed)
    try:
        t = cfg.train
        executor = TaskExecutor(task_batching(cfg, device), t.chunk_size, t.recompute_inner_steps)
        if fam.is_rl:
            from metarl.rl.objective import PolicyGradientObjective

            model = _policy(cfg, spec.policy, fam, dist, init_gen).to(device, dtype)
            objective = PolicyGradientObjective(model, cfg.learner.estimator, clip=outer.clip(cfg))
        else:
            from metarl.supervised.objective import SupervisedObjective

            model = _network(cfg, dist, init_gen, "nchw" if executor.one_task_at_a_time else "channels_last")
            objective = SupervisedObjective(model, dist.loss)
        if hasattr(dist, "check_num_tasks"):  # task distributions whose batches have a shape (Meta-World's skills)
            dist.check_num_tasks(t.meta_batch_size, "train", "train.meta_batch_size")
            dist.check_num_tasks(cfg.eval.num_tasks, "test", "eval.num_tasks")
            if t.eval_every:
                dist.check_num_tasks(min(t.eval_tasks, cfg.eval.num_tasks), "test", "train.eval_tasks")
        learner = spec.build(cfg, objective, model, parameters_of(model, dtype=dtype, device=device), executor)
        source = _source(cfg, fam, dist, objective, model, device, dtype, rank, world)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return Run(cfg, fam, spec, outer, dist, model, objective, learner, source, device)


def _network(cfg: Config, dist, generator: torch.Generator, layout: str):
    m = cfg.model
    wants = {"mlp": 1, "conv": 3, "cells": 3}[m.arch]  # vectors, or (channels, height, width) images
    if len(dist.input_shape) != wants:
        raise ValueError(f"model.arch {m.arch} needs {'vector' if wants == 1 else 'image'} inputs; {dist.name}'s "
                         f"are shaped {tuple(dist.input_shape)}: use model.arch {'conv' if wants == 1 else 'mlp'}")
    if m.arch == "mlp":
        from metarl.nets.mlp import MLP

        return MLP(int(torch.Size(dist.input_shape).numel()), m.hidden, dist.output_dim, generator=generator,
                   input_scale=m.input_scale, activation=m.activation, residual=m.residual, norm=m.norm, gated=m.gated)
    if m.arch == "cells":
        from metarl.nets.cells import CellNetwork

        return CellNetwork(dist.input_shape[0], dist.output_dim, m.channels, m.cells, m.nodes, m.genotype or None,
                           generator=generator)
    from metarl.nets.convnet import ConvNet

    return ConvNet(in_channels=dist.input_shape[0], ways=dist.output_dim, channels=m.channels, generator=generator,
                   layout=layout)


def _policy(cfg: Config, kind: str, fam, dist, generator: torch.Generator) -> torch.nn.Module:
    """The algorithm's policy (mlp: Gaussian MLP; gru: recurrent Gaussian) for the family's spaces."""
    from metarl.nets.policies import GaussianMLPPolicy, GRUGaussianPolicy

    probe = fam.batched_env(dist, 1, 1, cfg.task.horizon or fam.horizon, device="cpu",
                            **({"backend": "cpu"} if fam.backends else {}))
    obs_dim, act_dim = int(probe.single_observation_space.shape[0]), int(probe.single_action_space.shape[0])
    probe.close()
    m = cfg.model
    if kind == "gru":
        return GRUGaussianPolicy(obs_dim, act_dim, m.hidden[0], m.init_std, generator=generator,
                                 last_layer_scale=m.last_layer_scale, action_scale=m.action_scale)
    return GaussianMLPPolicy(obs_dim, act_dim, m.hidden, m.activation, m.init_std, generator=generator,
                             last_layer_scale=m.last_layer_scale, action_scale=m.action_scale)


def _source(cfg: Config, fam, dist, objective, model, device, dtype, rank: int, world: int) -> Source:
    t, e, B = cfg.task, cfg.eval, cfg.train.meta_batch_size
    if not fam.is_rl:
        from metarl.supervised.source import SupervisedSource

        return SupervisedSource(dist, objective, B, cfg.seed, device, t.k_support, t.k_query, e.k_support, e.k_query,
                                rank, world, cfg.model.batch_norm if cfg.model.arch == "conv" else None,
                                augment=cfg.learner.augmentation != "none")
    from metarl.rl.source import RolloutSource

    r = cfg.rl
    return RolloutSource(fam, dist, model, B, cfg.seed, device, r.episodes_per_task, t.horizon or fam.horizon, dtype,
                         r.gamma, r.gae_lambda, r.normalize_advantages, r.compile_sampler, r.backend,
                         e.episodes_per_task, rank, world)
