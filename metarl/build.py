"""Config -> objects: task distribution, model, objective, learner, optimiser. The only place that maps names."""
from __future__ import annotations

import torch

import envs
from metarl.config import Config
from metarl.errors import ConfigError
from metarl.learners import MAML, MetaLearner, Reptile
from metarl.models import MLP, parameters_of
from metarl.objectives import SupervisedObjective
from metarl.optim import FlatAdam, FlatSGD

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    return dev


def build_task_distribution(cfg: Config) -> envs.SupervisedTaskDistribution:
    try:
        dist = envs.make_task_distribution(cfg.task.name, **cfg.task.options)
    except KeyError as e:
        raise ConfigError(str(e.args[0])) from None
    except (TypeError, ValueError, FileNotFoundError) as e:
        raise ConfigError(f"task {cfg.task.name!r}: {e}") from None
    if not isinstance(dist, envs.SupervisedTaskDistribution):
        raise ConfigError(f"task {cfg.task.name!r} is an RL task distribution: train it with scripts/train_rl.py")
    if hasattr(dist, "dtype"):
        dist.dtype = DTYPES[cfg.train.dtype]
    return dist


def build_model(cfg: Config, dist: envs.SupervisedTaskDistribution, generator: torch.Generator) -> torch.nn.Module:
    out_dim = getattr(dist, "output_dim", None) or getattr(dist, "ways")
    if cfg.model.arch == "mlp":
        in_dim = int(torch.Size(dist.input_shape).numel())
        return MLP(in_dim, cfg.model.hidden, out_dim, generator=generator, input_scale=cfg.model.input_scale,
                   activation=cfg.model.activation, residual=cfg.model.residual, norm=cfg.model.norm,
                   gated=cfg.model.gated)
    from metarl.convnet import ConvNet  # classification only

    return ConvNet(in_channels=dist.input_shape[0], ways=out_dim, channels=cfg.model.channels, generator=generator)


def build_learner(cfg: Config, model: torch.nn.Module, dist: envs.SupervisedTaskDistribution,
                  device: torch.device) -> MetaLearner:
    objective = SupervisedObjective(model, dist.loss)
    init = parameters_of(model, dtype=DTYPES[cfg.train.dtype], device=device)
    lc = cfg.learner
    if lc.algo == "maml":
        return MAML(objective, init, inner_lr=lc.inner_lr, inner_steps=lc.inner_steps, first_order=lc.first_order,
                    learn_inner_lr=lc.learn_inner_lr, step_loss=lc.step_loss,
                    learn_step_scale=lc.learn_step_scale, step_loss_weights=lc.step_loss_weights,
                    inner_lr_per_step=lc.inner_lr_per_step)
    if lc.algo == "reptile":
        return Reptile(objective, init, inner_lr=lc.inner_lr, inner_steps=lc.inner_steps)
    if lc.algo == "lstm":
        from metarl.learners.lstm import LSTMMetaLearner

        return LSTMMetaLearner(objective, init, inner_steps=lc.inner_steps, hidden_size=lc.lstm_hidden)
    raise ConfigError(f"unknown learner.algo {lc.algo!r}")


def build_optimizer(cfg: Config, flat_params: torch.Tensor) -> FlatAdam | FlatSGD:
    """The outer optimiser over the flat meta-parameter vector (its lr is given at each step)."""
    return FlatAdam(flat_params) if cfg.train.optimizer == "adam" else FlatSGD(flat_params)
