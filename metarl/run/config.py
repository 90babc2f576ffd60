"""The typed configuration of every run: nested dataclasses, one docstring per field (what --help shows), and
YAML <-> dataclass conversion with type checks. Precedence: dataclass defaults < YAML file < flags
(metarl.run.cli); the rules between fields live with what reads them (metarl.run.validate, and each
algorithm's and outer step's spec), checked once when the config is read.

    scripts/train.py --config configs/sinusoid_maml.yaml --train.iterations 5000 --learner.inner_steps 2
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from metarl.algorithms import DEFAULT as DEFAULT_ALGORITHM
from metarl.core.errors import ConfigError

OptionValue = Union[int, float, bool, str]


@dataclass
class TaskConfig:
    name: str = "Sinusoid"
    """Task family (envs.registry): Sinusoid, Omniglot, Navigation2D, HalfCheetahVel, HalfCheetahDir, AntVel,
    AntDir, AntGoal, ... (case and "_" ignored; the Gymnasium id metarl/<Name>-v0 works too)."""
    options: dict[str, OptionValue] = field(default_factory=dict)
    """Keyword arguments of the task distribution (e.g. ways: 5, data_dir: ...); one at a time from the
    command line with --task.options.KEY VALUE."""
    k_support: int = 10
    """Supervised: support examples per task in training (classification: per class)."""
    k_query: int = 10
    """Supervised: query examples per task in training (classification: per class)."""
    horizon: int = 0
    """RL: steps per episode, H; 0 = the family's default (100 for Navigation2D, 200 for MuJoCo)."""


@dataclass
class ModelConfig:
    arch: Literal["mlp", "conv", "cells"] = "mlp"
    """Supervised: mlp, conv (the MAML paper's 4-block conv net, classification), or cells (a network of
    searched or derived conv cells, metarl.nets.cells). RL: a Gaussian mlp policy."""
    hidden: tuple[int, ...] = (40, 40)
    """Hidden layer widths of the mlp (RL: of the policy's mean; the MAML paper: 100, 100). learner.algo rl2:
    one width, the GRU's hidden units."""
    activation: Literal["relu", "tanh", "silu", "gelu", "softplus"] = "relu"
    """Hidden-layer nonlinearity of the mlp."""
    input_scale: float = 1.0
    """Supervised mlp: a fixed factor on the input (e.g. 0.2 maps sinusoid x in [-5, 5] to [-1, 1])."""
    residual: bool = False
    """Supervised mlp: equal-width hidden layers become residual blocks h + act(Linear(norm(h)))."""
    gated: bool = False
    """Supervised mlp: gated hidden layers act(W_v h + b_v) * (W_g h + b_g) (twice the parameters)."""
    norm: Literal["none", "layer"] = "none"
    """Supervised mlp: layer = LayerNorm before each residual block's Linear (after each hidden Linear
    without residual); its gain and bias are adapted in the inner loop like the other parameters."""
    channels: int = 64
    """Conv: filters per block (cells: per cell)."""
    cells: int = 3
    """Cells: cells in the network (a 2x2 max-pool between two)."""
    nodes: int = 3
    """Cells: intermediate nodes per cell."""
    genotype: str = ""
    """Cells: the derived cell to train, "I-J:OP ..." (metarl.nets.cells; written by a search as genotype.json);
    empty = the searchable network (learner.algo darts)."""
    batch_norm: Literal["transductive", "support"] = "transductive"
    """Conv: query batches normalised by their own statistics (transductive, the MAML paper's code), or by the
    task's support set statistics (each query classified without the other queries), in training and evaluation."""
    init_std: float = 1.0
    """RL policy: initial standard deviation of the Gaussian (state independent, learned)."""
    last_layer_scale: float = 1.0
    """RL policy: multiplies the initial weights and bias of the mean's output layer (0.01: mean near 0)."""
    action_scale: float = 1.0
    """RL policy: the Gaussian lives in units of this (action = action_scale * a'; init_std in those units):
    rllab's normalised actions with the action bound here (0.1 for Navigation2D)."""


@dataclass
class LearnerConfig:
    algo: str = DEFAULT_ALGORITHM
    """The algorithm, by its name in the registry (metarl.algorithms; listed at the top of --help). Each one's
    file states its inner and outer loop; the keys below say which algorithms read them."""
    inner_steps: int = 1
    """Adaptation steps per task in training (RL: each step collects fresh episodes with the adapted policy)."""
    inner_lr: float = 0.01
    """Inner step size alpha (the initial value when learn_inner_lr)."""
    first_order: bool = False
    """Drop second-order terms of the meta-gradient (FOMAML, first-order ANIL and DARTS; the LSTM learner's
    gradient inputs detached). Off by default: MAML is second order."""
    hypergradient: Literal["unrolled", "truncated", "implicit"] = "unrolled"
    """MAML: how the meta-gradient goes through the inner loop. unrolled: backprop through every step
    (first_order drops the second-order terms); truncated: second order through the last truncate_steps
    steps, first order before; implicit (iMAML, supervised): the inner steps descend the loss +
    implicit_lambda/2 |phi - theta|^2 and the meta-gradient is (I + H/implicit_lambda)^-1 grad L_outer(phi),
    H the inner loss's Hessian at phi, by implicit_cg_steps of conjugate gradient: memory of one step."""
    truncate_steps: int = 1
    """hypergradient truncated: the inner steps (the last ones) differentiated to second order."""
    implicit_lambda: float = 1.0
    """hypergradient implicit: strength of the proximal term that ties phi to theta."""
    implicit_cg_steps: int = 5
    """hypergradient implicit: conjugate-gradient iterations of the meta-gradient's linear solve."""
    augmentation: Literal["none", "fixed", "learned"] = "none"
    """MAML / reweight on image tasks: the inner (training) loss sees the support images under a random affine
    transform (rotation, scale, shear, translation; metarl.nets.augment) with augment_magnitudes, fixed or
    meta-learned through the inner (lookahead) step (meta-parameter group "augment")."""
    augment_magnitudes: tuple[float, ...] = (0.2, 0.1, 0.1, 0.1)
    """Rotation (radians), log-scale, shear and translation (fraction of the half-width): each image's transform
    draws them uniformly in +-magnitude (the initial values when learned)."""
    learn_inner_lr: bool = False
    """Learn one inner step size per parameter entry (Meta-SGD; in log space, initialised at inner_lr)."""
    inner_lr_per_step: bool = False
    """With learn_inner_lr: a separate set of learned step sizes for each inner step."""
    learn_step_scale: bool = False
    """Learn one step-size multiplier per inner step."""
    step_lr_scales: tuple[float, ...] = ()
    """Fixed multipliers of the step size of steps 1, 2, ... (the last repeats), in training and evaluation."""
    step_loss: Literal["last", "mean"] = "last"
    """Outer loss after the last inner step, or the mean over all inner steps (multi-step loss)."""
    step_loss_weights: tuple[float, ...] = ()
    """Weights of the outer losses after inner steps 1..inner_steps (normalised); overrides step_loss."""
    inner_batches: int = 1
    """reptile, supervised: the training support (e.g. task.k_support 10) split into this many mini-batches of
    consecutive (shuffled) examples, inner step s on mini-batch s mod inner_batches, as Reptile's inner loop
    takes mini-batches of a larger support; evaluation adapts on the whole support set."""
    lstm_hidden: int = 20
    """LSTM learner: hidden size of its coordinate-wise LSTM."""
    weighting: Literal["l2rw", "mwn", "none"] = "l2rw"
    """reweight: l2rw (learning to reweight, Ren et al. 2018: weights from the validation loss's gradient
    after a lookahead step of size inner_lr), mwn (Meta-Weight-Net, Shu et al. 2019: a learned loss -> weight
    MLP), none (plain training: the baseline)."""
    weight_net_hidden: int = 100
    """reweight with weighting mwn: hidden units of the weight network."""
    retrain_iterations: int = 0
    """darts: after the search, train the derived cell from scratch for this many iterations on the same data
    (plain training, in RUN_DIR/retrain); 0 = search only."""
    estimator: Literal["reinforce", "dice", "lvc"] = "reinforce"
    """RL: inner-loss gradient estimator: REINFORCE, (Loaded) DiCE, or ProMP's low-variance curvature."""


@dataclass
class OuterConfig:
    optimizer: str = "adam"
    """The outer step (metarl.outer; listed at the top of --help): adam / sgd on the meta-gradient (Reptile's
    interpolation is sgd with lr = epsilon); RL also: ppo (Adam epochs on the clipped surrogate) or trpo
    (natural gradient within a KL bound)."""
    lr: float = 0.001
    """Outer learning rate beta (adam, sgd, ppo)."""
    lr_decay: Literal["none", "cosine"] = "none"
    """Outer learning-rate schedule over the run."""
    grad_clip: float = 0.0
    """Clip the meta-gradient's global norm to this value; 0 turns clipping off."""
    epochs: int = 1
    """Outer gradient passes per batch (ppo: its epochs, e.g. 5)."""
    minibatches: int = 1
    """Steps per pass: the batch's tasks split into this many groups (ppo's minibatches)."""
    ppo_clip: float = 0.2
    """ppo: clipping range of the importance ratio."""
    max_kl: float = 0.01
    """trpo: bound on the mean KL of the outer step."""
    cg_iters: int = 10
    """trpo: conjugate-gradient iterations."""
    cg_damping: float = 1e-5
    """trpo: damping added to the KL Hessian."""
    ls_max_steps: int = 15
    """trpo: line-search trials."""
    ls_backtrack: float = 0.8
    """trpo: line-search step-size factor."""
    hvp_task_fraction: float = 1.0
    """trpo: fraction of the tasks whose KL drives the Hessian-vector products (cheaper CG when < 1)."""
    hvp_episode_fraction: float = 1.0
    """trpo, hvp gauss_newton: fraction of each task's episodes in the Hessian-vector products (evenly spaced;
    cheaper CG when < 1): J's inner Hessian from the kept support episodes, F from the kept query episodes. At
    one cost, every task with a few episodes models the batch's KL better than a few tasks with all of theirs."""
    hvp: Literal["autograd", "gauss_newton"] = "autograd"
    """trpo: KL Hessian-vector products by double backward through the adaptation, or as J^T F J v (equal
    at the current params, cheaper; one inner step with a fixed step size)."""


@dataclass
class RLSettings:
    episodes_per_task: int = 20
    """Episodes per task and per collection (the paper's 20 trajectories per gradient step)."""
    gamma: float = 0.99
    """Discount factor of returns and GAE."""
    gae_lambda: float = 1.0
    """GAE lambda (1.0 = Monte-Carlo returns minus the linear baseline)."""
    normalize_advantages: bool = True
    """Normalise advantages per task (mean 0, std 1 over valid steps)."""
    compile_sampler: bool = False
    """torch.compile the rollout step (policy, noise and, for pure-tensor envs, the transition): faster
    collections after a compile of some seconds."""
    backend: Literal["auto", "cpu", "cpu-batch", "cpu-threads", "warp"] = "auto"
    """MuJoCo physics: auto (warp with CUDA and mujoco_warp, else cpu), cpu, cpu-batch, cpu-threads, warp."""
    trial_episodes: int = 2
    """learner.algo rl2: episodes per trial in training (the GRU's state carries across them; a fresh state
    each trial). episodes_per_task is then the number of trials per task (eval.episodes_per_task likewise;
    evaluation trials last eval.steps + 1 episodes)."""


@dataclass
class TrainConfig:
    iterations: int = 20000
    """Outer (meta) iterations."""
    meta_batch_size: int = 25
    """Tasks per outer iteration (split across torch.distributed ranks)."""
    time_limit_s: float = 0.0
    """Stop after this many seconds of training (checkpoint, final evaluation; continue with --resume); 0 = none."""
    eval_every: int = 5000
    """Held-out evaluation every this many iterations (and at the end); 0 = only at the end."""
    eval_tasks: int = 200
    """Held-out tasks of the periodic evaluation (at most eval.num_tasks; the final one uses eval.num_tasks)."""
    checkpoint_every: int = 2000
    """Write the checkpoint every this many iterations (and at the end)."""
    log_every: int = 100
    """Log training metrics every this many iterations."""
    compile: bool = False
    """torch.compile the meta-gradient of the gradient outer steps (adam, sgd, ppo): several times faster per
    iteration after a compile of ~20 s (tests/test_compile.py: no graph break)."""
    task_batching: Literal["auto", "vmap", "loop", "chunks", "threads"] = "auto"
    """How the tasks of a batch are computed, in training and evaluation: vmap (one batched call), loop (one
    task at a time), chunks (vmap over groups of chunk_size), threads (the loop, one task per core side by
    side); auto = threads for conv nets on CPU (plain convolutions beat vmap's grouped ones there, and whole
    tasks per core beat one task's ops split over cores), vmap otherwise. The same numbers either way."""
    chunk_size: int = 8
    """Tasks per vmapped group with task_batching chunks."""
    recompute_inner_steps: bool = False
    """Gradient checkpointing of second-order MAML: each inner step's and outer loss's activations are
    recomputed in the backward instead of kept, so memory stops growing with inner steps (20-way 5-step
    MAML: 0.4x the plain path's peak, as little as first order, for ~1.2x the time: bench_omniglot.py
    --memory). Needs task_batching loop or threads (auto on CPU)."""
    dtype: Literal["float32", "float64"] = "float32"
    """Floating-point type of parameters and data."""
    threads: int = 0
    """torch.set_num_threads; 0 = torch's default (one per core)."""
    keep_freed_memory: bool = True
    """Keep freed memory in the process (glibc malloc; metarl.core.heap) instead of returning it to the
    system, so tensors allocated every iteration do not page-fault afresh: MAML-TRPO on HalfCheetah 13.4 s
    per iteration instead of 25.1 s on 2 cores. The resident size stays at the run's peak."""
    dist_timeout_s: float = 1800.0
    """Under torchrun: the longest a rank waits for the others in a collective (rank 0's periodic evaluation
    included) before the run stops with an error naming the ranks that did not answer."""


@dataclass
class EvalConfig:
    num_tasks: int = 1000
    """Held-out test tasks in the final evaluation."""
    steps: int = 10
    """Report the metric after 0..steps adaptation steps."""
    k_support: int = 5
    """Supervised: support examples per held-out task (classification: per class)."""
    k_query: int = 100
    """Supervised: query examples per held-out task (classification: per class)."""
    episodes_per_task: int = 20
    """RL: episodes per held-out task and adaptation step."""
    batch_size: int = 500
    """Tasks evaluated at once (memory bound)."""
    seed: int = 12345
    """Seed of the held-out tasks and data: every evaluation of every run sees the same ones."""
    plot_tasks: int = 4
    """Tasks drawn in the family's picture (episodes.png)."""


@dataclass
class LogConfig:
    wandb: Literal["online", "offline", "disabled"] = "online"
    """Weights & Biases mode; online falls back to offline without an API key or when the server does not
    answer within wandb_timeout_s."""
    project: str = "metarl"
    """W&B project."""
    entity: Optional[str] = None
    """W&B entity (team or user); None = the default of the API key."""
    wandb_timeout_s: float = 20.0
    """Seconds to wait for W&B online before falling back to offline."""
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
    outer: OuterConfig = field(default_factory=OuterConfig)
    rl: RLSettings = field(default_factory=RLSettings)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    seed: int = 0
    """Seed of initialisation, training tasks and rollouts."""
    device: str = "auto"
    """Torch device: auto (cuda when available), cpu, cuda, cuda:N."""
    run_dir: str = ""
    """Checkpoints, metrics and plots; empty = runs/<name>-s<seed>."""
    name: str = ""
    """Run name (W&B and the default run_dir); empty = <task>-<algo>[-<outer step> for RL]."""
    config: Optional[str] = None
    """YAML file whose values replace the defaults (flags override it)."""
    resume: bool = False
    """Continue the run in run_dir from its checkpoint."""

    def run_name(self) -> str:
        if self.name:
            return self.name
        from envs.registry import family

        name = f"{self.task.name}-{self.learner.algo}".lower()
        try:
            return name + (f"-{self.outer.optimizer}" if family(self.task.name).is_rl else "")
        except KeyError:
            return name

    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir or f"runs/{self.run_name()}-s{self.seed}")

    def validate(self) -> "Config":
        """Range checks, the rules that tie fields together, and no key the run would ignore (ConfigError)."""
        from metarl.run.validate import validate

        return validate(self)


# ---------------------------------------------------------------- dict / YAML <-> dataclasses

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp` (the subset of typing used above) and convert it."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
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
            if a is not type(None):
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
    checks = {bool: (lambda v: isinstance(v, bool), "true or false"),
              int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
              float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
              str: (lambda v: isinstance(v, str), "a string")}
    if tp in checks:
        ok, what = checks[tp]
        if not ok(value):
            raise ConfigError(f"{where} must be {what}, got {value!r}")
        return float(value) if tp is float else value
    if tp is Any:
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")


#: top-level sections of the meta-RL configs before the one schema, and where they went
_OLD_SECTIONS = {"env": "task (name, horizon) and rl (episodes_per_task)", "policy": "model",
                 "algo": "learner (algo, inner_lr, ...), outer (optimizer, max_kl, ...) and rl (gamma, ...)"}


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a (nested) dict; unknown keys and wrong types are ConfigErrors."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        k = unknown[0]
        if not prefix and k in _OLD_SECTIONS:
            raise ConfigError(f"config section '{k}' is from the old meta-RL config layout: its keys now live in "
                              f"{_OLD_SECTIONS[k]} (see the shipped configs/nav2d_*.yaml)")
        raise ConfigError(f"unknown config key '{prefix}{k}'; valid keys here: {', '.join(names)}")
    return cls(**{k: _coerce(v, hints[k], prefix + k) for k, v in data.items()})


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (lists, not tuples) for YAML, JSON, W&B and checkpoints."""

    def plain(v):
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def load_yaml(path: str | Path, cls: type = Config) -> Any:
    return from_dict(cls, read_yaml(path))


def flatten_dict(d: dict, keep: tuple[str, ...] = (), prefix: str = "") -> dict[str, Any]:
    """A nested config mapping as {"section.key": value}; mappings under a key in `keep` stay whole values."""
    out = {}
    for k, v in d.items():
        out.update(flatten_dict(v, keep, f"{prefix}{k}.") if isinstance(v, dict) and k not in keep else {prefix + k: v})
    return out


def nest_dict(flat: dict[str, Any]) -> dict[str, Any]:
    """The inverse of flatten_dict: {"section.key": value} as nested mappings."""
    out: dict[str, Any] = {}
    for path, v in flat.items():
        *parents, last = path.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = v
    return out


def merge_dicts(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_dicts(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


