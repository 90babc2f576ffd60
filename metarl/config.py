"""One typed configuration for every run: nested dataclasses, one docstring per field, YAML + command line.

    scripts/train.py --config configs/sinusoid_maml.yaml --train.iterations 5000 --learner.inner_steps 2

Precedence: dataclass defaults < YAML file < flags. A flag is `--section.field value`; booleans take
`--section.field` / `--section.no_field`; lists take several values (`--model.hidden 40 40`);
`--task.options.KEY VALUE` sets one option of the task distribution. Unknown keys, wrong types, out-of-range
values and keys that the chosen task family or algorithm does not use are ConfigErrors: one line, exit code
2, nothing written. `--help` lists every field with its doc.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import sys
import textwrap
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
    searched or derived conv cells, metarl.darts). RL: a Gaussian mlp policy."""
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
    """Cells: the derived cell to train, "I-J:OP ..." (metarl.darts; written by a search as genotype.json);
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
    algo: Literal["maml", "reptile", "lstm", "reweight", "darts", "rl2"] = "maml"
    """maml (second order; first_order: FOMAML; learn_inner_lr: Meta-SGD), reptile, lstm (Ravi & Larochelle),
    reweight (learned example weights on a clean validation set, supervised: learner.weighting; weighting
    none is plain training), darts (architecture search of model.arch cells; first_order: first-order DARTS).
    With an RL task family: MAML-RL / Reptile-RL, the outer step from outer.optimizer; or rl2 (RL², a GRU
    policy that adapts in context over rl.trial_episodes episodes, trained with outer.optimizer ppo)."""
    inner_steps: int = 1
    """Adaptation steps per task in training (RL: each step collects fresh episodes with the adapted policy)."""
    inner_lr: float = 0.01
    """Inner step size alpha (the initial value when learn_inner_lr)."""
    first_order: bool = False
    """Drop second-order terms of the meta-gradient (FOMAML; the LSTM learner's gradient inputs detached).
    Off by default: MAML is second order."""
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
    transform (rotation, scale, shear, translation; metarl.augment) with augment_magnitudes, fixed or
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
    optimizer: Literal["adam", "sgd", "ppo", "trpo"] = "adam"
    """adam / sgd on the meta-gradient (Reptile's interpolation is sgd with lr = epsilon); RL also: ppo
    (Adam epochs on the clipped surrogate) or trpo (natural gradient within a KL bound)."""
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
    """Supervised: torch.compile the meta-gradient (several times faster per iteration after a ~20 s compile)."""
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
        """Range checks, the checks that tie fields together, and no key the run would ignore."""
        from envs.registry import family

        try:
            fam = family(self.task.name)
        except KeyError as e:
            raise ConfigError(f"task.name: {e.args[0]}") from None
        L, O, T, E = self.learner, self.outer, self.train, self.eval
        check_ranges(positive={
            "task.k_support": self.task.k_support, "task.k_query": self.task.k_query,
            "model.channels": self.model.channels, "model.input_scale": self.model.input_scale,
            "model.init_std": self.model.init_std, "model.last_layer_scale": self.model.last_layer_scale,
            "model.action_scale": self.model.action_scale, "learner.inner_steps": L.inner_steps,
            "learner.inner_lr": L.inner_lr, "learner.lstm_hidden": L.lstm_hidden, "outer.lr": O.lr,
            "outer.epochs": O.epochs, "outer.minibatches": O.minibatches, "outer.max_kl": O.max_kl, "outer.cg_iters": O.cg_iters,
            "outer.ls_max_steps": O.ls_max_steps, "rl.episodes_per_task": self.rl.episodes_per_task,
            "train.iterations": T.iterations, "train.meta_batch_size": T.meta_batch_size,
            "train.eval_tasks": T.eval_tasks, "train.checkpoint_every": T.checkpoint_every,
            "train.log_every": T.log_every, "train.chunk_size": T.chunk_size, "eval.num_tasks": E.num_tasks, "eval.k_support": E.k_support,
            "eval.k_query": E.k_query, "eval.episodes_per_task": E.episodes_per_task,
            "eval.batch_size": E.batch_size,
        }, non_negative={
            "task.horizon": self.task.horizon, "outer.grad_clip": O.grad_clip, "outer.ppo_clip": O.ppo_clip,
            "outer.cg_damping": O.cg_damping, "train.time_limit_s": T.time_limit_s,
            "train.eval_every": T.eval_every, "train.threads": T.threads, "eval.steps": E.steps,
            "eval.plot_tasks": E.plot_tasks, "log.wandb_timeout_s": self.log.wandb_timeout_s,
        }, unit_interval={
            "rl.gamma": self.rl.gamma, "rl.gae_lambda": self.rl.gae_lambda, "outer.ls_backtrack": O.ls_backtrack,
            "outer.hvp_task_fraction": O.hvp_task_fraction, "outer.hvp_episode_fraction": O.hvp_episode_fraction,
        })
        if any(h <= 0 for h in self.model.hidden):
            raise ConfigError(f"model.hidden widths must be positive, got {list(self.model.hidden)}")
        if any(not x > 0 for x in L.step_lr_scales):
            raise ConfigError(f"learner.step_lr_scales must be positive, got {list(L.step_lr_scales)}")
        w = L.step_loss_weights
        if w and (len(w) != L.inner_steps or min(w) < 0 or sum(w) <= 0):
            raise ConfigError(f"learner.step_loss_weights needs learner.inner_steps = {L.inner_steps} non-negative "
                              f"weights with a positive sum, got {list(w)}")
        if L.algo == "darts" and (self.model.arch != "cells" or self.model.genotype):
            raise ConfigError("learner.algo darts searches model.arch cells with no model.genotype")
        if self.model.arch == "cells" and not self.model.genotype and L.algo != "darts":
            raise ConfigError("model.arch cells without a model.genotype is the search network: learner.algo darts "
                              "(or give the derived cell as model.genotype)")
        if self.model.arch == "cells" and self.model.genotype:
            from metarl.darts import parse_genotype

            try:
                parse_genotype(self.model.genotype)
            except ValueError as e:
                raise ConfigError(f"model.genotype: {e}") from None
        check_ranges(positive={"model.cells": self.model.cells, "model.nodes": self.model.nodes},
                     non_negative={"learner.retrain_iterations": L.retrain_iterations})
        if L.algo == "rl2":
            if not fam.is_rl:
                raise ConfigError("learner.algo rl2 is a recurrent policy for RL task families (e.g. Navigation2D)")
            if O.optimizer != "ppo":
                raise ConfigError(f"learner.algo rl2 trains with outer.optimizer ppo, got {O.optimizer}")
            if len(self.model.hidden) != 1:
                raise ConfigError("learner.algo rl2: model.hidden is the GRU's width, one value (e.g. [64]), got "
                                  f"{list(self.model.hidden)}")
            check_ranges(positive={"rl.trial_episodes": self.rl.trial_episodes})
        if L.algo == "reweight" and fam.is_rl:
            raise ConfigError("learner.algo reweight weighs supervised examples: use a supervised task family "
                              "(e.g. NoisyOmniglot)")
        if L.hypergradient != "unrolled" and L.algo != "maml":
            raise ConfigError(f"learner.hypergradient {L.hypergradient} is a MAML option (learner.algo {L.algo})")
        if L.hypergradient != "unrolled" and L.first_order:
            raise ConfigError(f"learner.first_order is the first-order hypergradient: it does not combine with "
                              f"learner.hypergradient {L.hypergradient}")
        if L.hypergradient == "truncated" and not 1 <= L.truncate_steps < L.inner_steps:
            raise ConfigError(f"learner.truncate_steps must be in 1..inner_steps-1 = {L.inner_steps - 1}, got "
                              f"{L.truncate_steps} (truncating none is hypergradient unrolled)")
        if L.hypergradient == "implicit" and (fam.is_rl or L.learn_inner_lr or L.learn_step_scale or w
                                              or L.step_loss != "last"):
            raise ConfigError("learner.hypergradient implicit needs a supervised family, a fixed inner step size "
                              "and the outer loss after the last step (learn_inner_lr, learn_step_scale, "
                              "step_loss_weights and step_loss mean are unrolled options)")
        if L.augmentation != "none":
            if L.algo not in ("maml", "reweight") or fam.is_rl or self.model.arch != "conv":
                raise ConfigError("learner.augmentation needs learner.algo maml or reweight on an image task "
                                  "(model.arch conv)")
            if L.algo == "reweight" and L.augmentation == "learned" and L.weighting == "l2rw":
                raise ConfigError("learner.augmentation learned with learner.algo reweight needs weighting none or "
                                  "mwn (l2rw's lookahead is taken at zero weights, where it does not depend on the "
                                  "augmentation)")
            if len(L.augment_magnitudes) != 4:
                raise ConfigError("learner.augment_magnitudes needs 4 values (rotation, log-scale, shear, "
                                  f"translation), got {list(L.augment_magnitudes)}")
            if L.augmentation == "learned" and L.hypergradient == "implicit":
                raise ConfigError("learner.augmentation learned needs learner.hypergradient unrolled or truncated")
        check_ranges(positive={"learner.implicit_lambda": L.implicit_lambda,
                               "learner.implicit_cg_steps": L.implicit_cg_steps})
        if L.inner_lr_per_step and not L.learn_inner_lr:
            raise ConfigError("learner.inner_lr_per_step needs learner.learn_inner_lr (per-step sizes are learned)")
        if O.optimizer in ("ppo", "trpo") and not fam.is_rl:
            raise ConfigError(f"outer.optimizer {O.optimizer} is an RL outer step; {fam.name} is a supervised "
                              "family: use adam or sgd")
        if O.optimizer == "trpo" and O.hvp == "gauss_newton" and (L.algo != "maml" or L.inner_steps > 1 or L.learn_inner_lr or L.learn_step_scale):
            raise ConfigError("outer.hvp gauss_newton needs learner.algo maml with one inner step and a fixed "
                              "step size; use autograd")
        if O.optimizer == "trpo" and O.hvp_episode_fraction < 1 and O.hvp != "gauss_newton":
            raise ConfigError("outer.hvp_episode_fraction needs outer.hvp gauss_newton (autograd would adapt on "
                              "the kept support episodes only, away from the policy that sampled the query)")
        if fam.is_rl and self.rl.backend != "auto" and self.rl.backend not in fam.backends:
            raise ConfigError(f"rl.backend {self.rl.backend} is not a backend of {fam.name} "
                              f"({', '.join(fam.backends) or 'it has none to choose'})")
        defaults = Config()
        for path, reason in unused_keys(self, fam.is_rl, bool(fam.backends)).items():
            if get_path(self, path) != get_path(defaults, path):
                raise ConfigError(f"{path} is not used with {reason}: remove it")
        return self


_TRPO_KEYS = ("max_kl", "cg_iters", "cg_damping", "ls_max_steps", "ls_backtrack", "hvp_task_fraction",
              "hvp_episode_fraction", "hvp")


def unused_keys(cfg: Config, rl: bool, has_backends: bool) -> dict[str, str]:
    """Keys the run would ignore -> why (set to anything but their default, they are errors)."""
    out: dict[str, str] = {}

    def mark(paths, reason: str) -> None:
        for p in paths:
            out.setdefault(p, reason)

    L, O = cfg.learner, cfg.outer
    if rl:
        mark(["task.k_support", "task.k_query", "eval.k_support", "eval.k_query", "model.arch", "model.input_scale",
              "model.residual", "model.gated", "model.norm", "model.channels", "model.batch_norm", "train.compile"],
             "an RL task family")
        if not has_backends:
            mark(["rl.backend"], f"{cfg.task.name} (no physics backend to choose)")
    else:
        mark(["task.horizon", "eval.episodes_per_task", "model.init_std", "model.last_layer_scale",
              "model.action_scale", "learner.estimator"] + [f"rl.{f.name}" for f in dataclasses.fields(RLSettings)],
             "a supervised task family")
        if cfg.model.arch in ("conv", "cells"):
            mark([f"model.{k}" for k in ("hidden", "activation", "input_scale", "residual", "gated", "norm")],
                 f"model.arch {cfg.model.arch}")
        else:
            mark(["model.channels", "model.batch_norm"], "model.arch mlp")
        if cfg.model.arch == "cells":
            mark(["model.batch_norm"], "model.arch cells")
        else:
            mark(["model.cells", "model.nodes", "model.genotype"], f"model.arch {cfg.model.arch}")
    if L.algo != "darts":
        mark(["learner.retrain_iterations"], f"learner.algo {L.algo}")
    else:
        mark([f"learner.{k}" for k in ("inner_steps", "learn_inner_lr", "inner_lr_per_step", "learn_step_scale",
                                       "step_lr_scales", "step_loss", "step_loss_weights")], "learner.algo darts")
    if L.algo != "reweight":
        mark(["learner.weighting", "learner.weight_net_hidden"], f"learner.algo {L.algo}")
    else:
        mark([f"learner.{k}" for k in ("inner_steps", "first_order", "learn_inner_lr", "inner_lr_per_step",
                                       "learn_step_scale", "step_lr_scales", "step_loss", "step_loss_weights")],
             "learner.algo reweight")
        if L.weighting != "mwn":
            mark(["learner.weight_net_hidden"], f"learner.weighting {L.weighting}")
    if L.algo != "rl2":
        mark(["rl.trial_episodes"], f"learner.algo {L.algo}")
    else:
        mark([f"learner.{k}" for k in ("inner_steps", "inner_lr", "first_order", "learn_inner_lr", "inner_lr_per_step",
                                       "learn_step_scale", "step_lr_scales", "step_loss", "step_loss_weights",
                                       "estimator")] + ["model.activation", "rl.compile_sampler"], "learner.algo rl2")
    if L.algo != "lstm":
        mark(["learner.lstm_hidden"], f"learner.algo {L.algo}")
    else:
        mark([f"learner.{k}" for k in ("inner_lr", "learn_inner_lr", "inner_lr_per_step", "learn_step_scale",
                                       "step_lr_scales")], "learner.algo lstm")
    if L.algo == "reptile":
        mark([f"learner.{k}" for k in ("first_order", "learn_inner_lr", "inner_lr_per_step", "learn_step_scale",
                                       "step_loss", "step_loss_weights")], "learner.algo reptile")
    if L.step_loss_weights:
        mark(["learner.step_loss"], "learner.step_loss_weights set")
    if L.augmentation == "none":
        mark(["learner.augment_magnitudes"], "learner.augmentation none")
    if L.hypergradient != "truncated":
        mark(["learner.truncate_steps"], f"learner.hypergradient {L.hypergradient}")
    if L.hypergradient != "implicit":
        mark(["learner.implicit_lambda", "learner.implicit_cg_steps"], f"learner.hypergradient {L.hypergradient}")
    if O.optimizer == "trpo":
        mark(["outer.lr", "outer.lr_decay", "outer.grad_clip", "outer.epochs", "outer.minibatches"],
             "outer.optimizer trpo")
    else:
        mark([f"outer.{k}" for k in _TRPO_KEYS], f"outer.optimizer {O.optimizer}")
    if O.optimizer != "ppo":
        mark(["outer.ppo_clip"], f"outer.optimizer {O.optimizer}")
    if cfg.train.task_batching != "chunks":
        mark(["train.chunk_size"], f"train.task_batching {cfg.train.task_batching}")
    return out


def get_path(cfg: Any, path: str) -> Any:
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


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


# ---------------------------------------------------------------- command line

def _scalar(text: str) -> Any:
    """A flag's value: true/false, null, an int, a float (1e-3 too), else the string itself."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "none"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _fields(cls: type, prefix: str = "") -> dict[str, tuple[Any, str]]:
    """Flat `section.field` -> (type, doc) of every leaf field of a nested dataclass."""
    hints, docs, out = typing.get_type_hints(cls), field_docs(cls), {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(_fields(tp, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = (tp, docs.get(f.name, ""))
    return out


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (read from its source)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body, docs = tree.body[0].body, {}
    for a, b in zip(body, body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(b, ast.Expr) \
                and isinstance(getattr(b, "value", None), ast.Constant) and isinstance(b.value.value, str):
            docs[a.target.id] = " ".join(b.value.value.split())
    return docs


def _is_list(tp: Any) -> bool:
    return typing.get_origin(tp) in (tuple, list)


def _is_bool(tp: Any) -> bool:
    return tp is bool


def help_text(cls: type, description: str | None) -> str:
    lines = [description.strip(), ""] if description else []
    lines.append("Every field is a flag (--section.field VALUE); defaults < --config YAML < flags.\n")
    for path, (tp, doc) in _fields(cls).items():
        section, _, leaf = path.rpartition(".")
        if _is_bool(tp):
            flag = f"--{path} / --{section + '.' if section else ''}no_{leaf}"
        elif typing.get_origin(tp) is dict:
            flag = f"--{path}.KEY VALUE"
        elif typing.get_origin(tp) is Literal:
            flag = f"--{path} {{{','.join(map(str, typing.get_args(tp)))}}}"
        else:
            flag = f"--{path} {_type_name(tp).upper()}" + (" ..." if _is_list(tp) else "")
        lines.append(f"  {flag}")
        lines.extend("      " + ln for ln in textwrap.wrap(doc, 100))
    return "\n".join(lines)


def _set(data: dict, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for p in parents:
        data = data.setdefault(p, {})
        if not isinstance(data, dict):
            raise ConfigError(f"--{path}: {p} is not a section")
    data[last] = value


def parse_flags(cls: type, args: list[str]) -> dict[str, Any]:
    """Flags -> a nested dict of overrides (types are checked by from_dict)."""
    fields = _fields(cls)
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("--"):
            raise ConfigError(f"unexpected argument {token!r}: flags look like --section.field VALUE")
        name, _, inline = token[2:].partition("=")
        name = name.replace("-", "_")
        values = [inline] if inline else []
        j = i + 1
        while not inline and j < len(args) and not args[j].startswith("--"):
            values.append(args[j])
            j += 1
        i = j
        head, _, leaf = name.rpartition(".")
        negated = leaf.startswith("no_") and (f"{head}.{leaf[3:]}" if head else leaf[3:]) in fields
        path = (f"{head}.{leaf[3:]}" if head else leaf[3:]) if negated else name
        if cls is Config and path.startswith("task.options.") and path.count(".") == 2:
            if len(values) != 1:
                raise ConfigError(f"--{path} takes one value")
            out.setdefault("task", {}).setdefault("options", {})[path.split(".")[2]] = _scalar(values[0])
            continue
        if path not in fields:
            close = difflib.get_close_matches(path, fields, n=1)
            raise ConfigError(f"unknown flag --{name}" + (f"; did you mean --{close[0]}?" if close else ""))
        tp = fields[path][0]
        if _is_bool(tp) and not values:
            value: Any = not negated
        elif _is_list(tp):
            value = [_scalar(v) for v in values]
        elif len(values) != 1:
            raise ConfigError(f"--{path} takes one value, got {len(values)}")
        else:
            value = _scalar(values[0])
            if tp is str or (typing.get_origin(tp) in (Union, types.UnionType) and str in typing.get_args(tp)):
                value = values[0] if value is not None else None
        _set(out, path, value)
    return out


def merge_dicts(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_dicts(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_cli(cls: type = Config, args: list[str] | None = None, description: str | None = None) -> Any:
    """defaults < --config YAML < flags; --help prints every field with its doc and exits."""
    args = list(sys.argv[1:] if args is None else args)
    if "-h" in args or "--help" in args:
        print(help_text(cls, description))
        sys.exit(0)
    overrides = parse_flags(cls, args)
    path = overrides.get("config") if cls is Config else None
    cfg = from_dict(cls, merge_dicts(read_yaml(path) if path else {}, overrides))
    return cfg.validate() if hasattr(cfg, "validate") else cfg
