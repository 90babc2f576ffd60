"""Typed configuration: nested dataclasses, one docstring per field, loaded from YAML and the command line.

    scripts/train.py --config configs/sinusoid_maml.yaml --train.iterations 5000 --learner.inner_steps 2

Precedence: dataclass defaults < YAML file < command-line flags. Unknown keys, wrong types and out-of-range
values are ConfigErrors. `--help` lists every field with its doc.
"""
from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from metarl.errors import ConfigError

OptionValue = Union[int, float, bool, str]


@dataclass
class TaskConfig:
    name: str = "sinusoid"
    """Task distribution by registry name (e.g. sinusoid, omniglot)."""
    k_support: int = 10
    """Support examples per task used for adaptation in training (for classification: per class)."""
    k_query: int = 10
    """Query examples per task that score the adapted learner in training (for classification: per class)."""
    options: dict[str, OptionValue] = field(default_factory=dict)
    """Keyword arguments of the task distribution's constructor (e.g. ways: 5, data_dir: ...)."""


@dataclass
class ModelConfig:
    arch: Literal["mlp", "conv"] = "mlp"
    """Learner network: mlp (regression) or conv (the MAML paper's 4-block conv net, classification)."""
    hidden: tuple[int, ...] = (40, 40)
    """Hidden layer widths of the mlp."""
    input_scale: float = 1.0
    """Fixed factor applied to the mlp's input (e.g. 0.2 maps sinusoid x in [-5, 5] to [-1, 1])."""
    activation: Literal["relu", "tanh", "silu", "gelu", "softplus"] = "relu"
    """Hidden-layer nonlinearity of the mlp."""
    residual: bool = False
    """Make the mlp's equal-width hidden layers residual blocks h + act(Linear(norm(h))) (the first stays plain)."""
    gated: bool = False
    """Gated mlp hidden layers act(W_v h + b_v) * (W_g h + b_g) instead of act(W h + b) (twice the parameters)."""
    norm: Literal["none", "layer"] = "none"
    """Normalisation in the mlp: layer = LayerNorm before each residual block's Linear (after each hidden Linear
    without residual); its gain and bias are adapted in the inner loop like the other parameters."""
    channels: int = 64
    """Filters per conv block (conv only)."""


@dataclass
class LearnerConfig:
    algo: Literal["maml", "reptile", "lstm"] = "maml"
    """Meta-learner: maml (with first_order / learn_inner_lr variants), reptile, lstm (Ravi & Larochelle)."""
    inner_steps: int = 1
    """Adaptation steps per task during training."""
    inner_lr: float = 0.01
    """Inner-loop step size alpha (the initial value when learn_inner_lr)."""
    first_order: bool = False
    """Drop second-order terms of the meta-gradient (FOMAML). Off by default: MAML is second order."""
    learn_inner_lr: bool = False
    """Learn one inner step size per parameter entry (Meta-SGD; learned in log space, initialised at inner_lr)."""
    learn_step_scale: bool = False
    """Learn one step-size multiplier per inner step (steps beyond inner_steps reuse the last one)."""
    inner_lr_per_step: bool = False
    """With learn_inner_lr: a separate learned step size per parameter entry for each inner step (steps beyond
    inner_steps reuse the last step's)."""
    step_loss: Literal["last", "mean"] = "last"
    """Outer loss on the last inner step only, or the mean over all inner steps (multi-step loss)."""
    step_loss_weights: tuple[float, ...] = ()
    """Weights of the query losses after inner steps 1..inner_steps (normalised); overrides step_loss."""
    lstm_hidden: int = 20
    """Hidden size of the LSTM meta-learner's first (coordinate-wise) LSTM (lstm only)."""


@dataclass
class TrainConfig:
    iterations: int = 20000
    """Outer (meta) iterations."""
    meta_batch_size: int = 25
    """Tasks per outer iteration."""
    optimizer: Literal["adam", "sgd"] = "adam"
    """Outer optimiser. Reptile's epsilon is the lr of sgd."""
    lr: float = 0.001
    """Outer learning rate (beta)."""
    lr_decay: Literal["none", "cosine"] = "none"
    """Outer learning-rate schedule over the run."""
    grad_clip: float = 0.0
    """Clip the meta-gradient's global norm to this value; 0 turns clipping off."""
    compile: bool = False
    """torch.compile the meta-gradient: several times faster per iteration after a one-off compile (~20 s)."""
    eval_every: int = 5000
    """Held-out evaluation every this many iterations (and at the end); 0 = only at the end."""
    eval_tasks: int = 200
    """Held-out tasks in the periodic evaluation (the final evaluation uses eval.num_tasks)."""
    checkpoint_every: int = 2000
    """Write the checkpoint every this many iterations (and at the end)."""
    log_every: int = 100
    """Log training metrics every this many iterations."""
    dtype: Literal["float32", "float64"] = "float32"
    """Floating-point type of parameters and data."""


@dataclass
class EvalConfig:
    num_tasks: int = 1000
    """Held-out test tasks in the final evaluation."""
    k_support: int = 5
    """Support examples per held-out task (per class for classification)."""
    k_query: int = 100
    """Query examples per held-out task (per class for classification)."""
    steps: int = 10
    """Report the query loss after 0..steps adaptation steps."""
    batch_size: int = 500
    """Tasks evaluated at once (memory bound)."""
    seed: int = 12345
    """Seed of the held-out episodes: every evaluation of every run sees the same ones."""
    plot_tasks: int = 4
    """Tasks drawn in the PNG."""


@dataclass
class LogConfig:
    wandb: Literal["online", "offline", "disabled"] = "online"
    """Weights & Biases mode; online falls back to offline when no API key is configured."""
    project: str = "metarl"
    """W&B project."""
    entity: Optional[str] = None
    """W&B entity (team or user); None = the default of the API key."""
    console: bool = True
    """Print metrics to the console."""
    jsonl: bool = True
    """Append metrics to RUN_DIR/metrics.jsonl."""
    progress: bool = True
    """Show a progress bar."""


@dataclass
class Config:
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    seed: int = 0
    """Seed of model initialisation and of the training task stream."""
    device: str = "auto"
    """Torch device: auto (cuda when available), cpu, cuda, cuda:N."""
    run_dir: str = ""
    """Where checkpoints, metrics and plots go; empty = runs/<task>-<algo>-s<seed>."""
    name: str = ""
    """Run name (W&B and the default run_dir); empty = <task>-<algo>."""
    config: Optional[str] = None
    """YAML file whose values replace the defaults (command-line flags override it)."""
    resume: bool = False
    """Continue the run in run_dir from its checkpoint."""

    def run_name(self) -> str:
        return self.name or f"{self.task.name}-{self.learner.algo}"

    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir or f"runs/{self.run_name()}-s{self.seed}")

    def validate(self) -> "Config":
        """Range checks a type system cannot express; raise ConfigError naming the field."""
        positive = {
            "task.k_support": self.task.k_support,
            "task.k_query": self.task.k_query,
            "learner.inner_steps": self.learner.inner_steps,
            "learner.inner_lr": self.learner.inner_lr,
            "learner.lstm_hidden": self.learner.lstm_hidden,
            "model.channels": self.model.channels,
            "model.input_scale": self.model.input_scale,
            "train.iterations": self.train.iterations,
            "train.meta_batch_size": self.train.meta_batch_size,
            "train.lr": self.train.lr,
            "train.eval_tasks": self.train.eval_tasks,
            "train.checkpoint_every": self.train.checkpoint_every,
            "train.log_every": self.train.log_every,
            "eval.num_tasks": self.eval.num_tasks,
            "eval.k_support": self.eval.k_support,
            "eval.k_query": self.eval.k_query,
            "eval.batch_size": self.eval.batch_size,
        }
        check_ranges(positive=positive, non_negative={
            "train.eval_every": self.train.eval_every,
            "train.grad_clip": self.train.grad_clip,
            "eval.steps": self.eval.steps,
            "eval.plot_tasks": self.eval.plot_tasks,
        })
        if any(h <= 0 for h in self.model.hidden):
            raise ConfigError(f"model.hidden widths must be positive, got {list(self.model.hidden)}")
        if self.learner.algo == "reptile" and (self.learner.learn_inner_lr or self.learner.learn_step_scale):
            raise ConfigError("learned step sizes are not defined for reptile (no gradient flows to them)")
        if self.learner.inner_lr_per_step and not (self.learner.algo == "maml" and self.learner.learn_inner_lr):
            raise ConfigError("learner.inner_lr_per_step needs learner.algo maml with learner.learn_inner_lr")
        return self


def check_ranges(positive: dict[str, float] | None = None, non_negative: dict[str, float] | None = None,
                 unit_interval: dict[str, float] | None = None) -> None:
    """Raise ConfigError naming the first field outside its range: > 0, >= 0, or in (0, 1]."""
    for name, value in (positive or {}).items():
        if not value > 0:
            raise ConfigError(f"{name} must be positive, got {value!r}")
    for name, value in (non_negative or {}).items():
        if not value >= 0:
            raise ConfigError(f"{name} must be >= 0, got {value!r}")
    for name, value in (unit_interval or {}).items():
        if not 0 < value <= 1:
            raise ConfigError(f"{name} must be in (0, 1], got {value!r}")


# ---------------------------------------------------------------- dict / YAML <-> dataclasses

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp` (the subset of typing used above) and convert it."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, where + ".")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: {value!r} is not a {_type_name(tp)}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        item = args[0] if args else Any
        return (tuple if origin is tuple else list)(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a (nested) dict; unknown keys and wrong types are ConfigErrors."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}'; valid keys here: {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (lists, not tuples) for YAML, JSON, W&B and checkpoints."""

    def plain(v):
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def load_yaml(path: str | Path, cls: type = Config) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return from_dict(cls, data)


def parse_cli(cls: type = Config, args: list[str] | None = None, description: str | None = None) -> Any:
    """defaults < --config YAML < flags. Every field is a flag (`--section.field value`); --help lists them."""
    import argparse

    import tyro

    args = list(sys.argv[1:] if args is None else args)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(args)
    default = load_yaml(known.config, cls) if known.config else cls()
    if known.config:
        default.config = known.config
    cfg = tyro.cli(cls, default=default, args=args, description=description, use_underscores=True)
    return cfg.validate() if hasattr(cfg, "validate") else cfg
