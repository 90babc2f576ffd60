"""Typed configuration of meta-RL runs (scripts/train_rl.py, scripts/evaluate_rl.py).

Same rules as `metarl.config`: nested dataclasses with a doc per field; YAML + `--section.field` flags;
unknown keys, wrong types and out-of-range values are ConfigErrors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from metarl.config import LogConfig, check_ranges
from metarl.errors import ConfigError


@dataclass
class EnvConfig:
    name: str = "Navigation2D"
    """Batched env by name (envs.batched_registry), e.g. Navigation2D."""
    episodes_per_task: int = 20
    """Episodes per task and per collection (the paper's 20 trajectories per gradient step)."""
    horizon: int = 0
    """Steps per episode; 0 = the env's default (100 for Navigation2D)."""


@dataclass
class PolicyConfig:
    hidden: tuple[int, ...] = (100, 100)
    """Hidden layer widths of the Gaussian MLP policy (the paper: 2 x 100)."""
    activation: Literal["relu", "tanh"] = "relu"
    """Hidden nonlinearity."""
    init_std: float = 1.0
    """Initial standard deviation of the Gaussian (state independent, learned)."""
    last_layer_scale: float = 1.0
    """Multiplies the initial weights and bias of the mean's output layer (e.g. 0.01: initial mean near 0)."""
    action_scale: float = 1.0
    """The Gaussian is parametrised in units of this (action = action_scale * a', a' ~ N(mlp(obs), std^2);
    init_std is in those units): rllab's normalised actions with the action bound here (0.1 for Navigation2D).
    Changes the geometry of the inner gradient step, not what the policy can express."""


@dataclass
class AlgoConfig:
    algo: Literal["maml_trpo", "maml_ppo", "reptile"] = "maml_trpo"
    """Meta-learner: MAML with a TRPO outer step, MAML with a PPO outer step, or Reptile with an RL inner loop."""
    first_order: bool = False
    """Drop the second-order terms of the meta-gradient (first-order MAML)."""
    estimator: Literal["reinforce", "dice", "lvc"] = "reinforce"
    """Inner-loss gradient estimator: plain REINFORCE, (Loaded) DiCE, or ProMP's low-variance curvature."""
    inner_lr: float = 0.1
    """Inner policy-gradient step size alpha (the initial value of the learned ones with learn_inner_lr)."""
    step_lr_scales: tuple[float, ...] = ()
    """MAML: multipliers of the inner step size for steps 1, 2, ... (the last repeats for further steps), in
    training and in the held-out evaluation; empty = 1 for every step."""
    learn_inner_lr: bool = False
    """MAML: learn one inner step size per policy parameter entry (Meta-SGD), in log space, by the outer step."""
    inner_steps: int = 1
    """Adaptation steps per task in training: MAML differentiates through all of them (each step collects
    fresh episodes with the policy of the previous one, as the evaluation does); Reptile's inner loop."""
    step_loss_weights: tuple[float, ...] = ()
    """MAML: weights of the outer surrogate (and KL) of the policies after 1..inner_steps steps, normalised to
    sum 1; empty = the last step only."""
    gamma: float = 0.99
    """Discount factor of returns and GAE."""
    gae_lambda: float = 1.0
    """GAE lambda (1.0 = Monte-Carlo returns minus the baseline)."""
    normalize_advantages: bool = True
    """Normalise advantages per task (mean 0, std 1 over valid steps)."""
    max_kl: float = 0.01
    """TRPO: bound on the mean KL of the outer step."""
    cg_iters: int = 10
    """TRPO: conjugate-gradient iterations."""
    cg_damping: float = 1e-5
    """TRPO: damping added to the KL Hessian."""
    ls_max_steps: int = 15
    """TRPO: line-search trials."""
    ls_backtrack: float = 0.8
    """TRPO: line-search step-size factor."""
    hvp_task_fraction: float = 1.0
    """TRPO: fraction of tasks whose KL drives the Hessian-vector products (cheaper CG when < 1)."""
    hvp: Literal["autograd", "gauss_newton"] = "autograd"
    """TRPO: KL Hessian-vector products by double backward through the adaptation, or as J^T F J v (equal at
    the current params, cheaper)."""
    ppo_clip: float = 0.2
    """PPO: clipping range of the importance ratio."""
    ppo_epochs: int = 5
    """PPO: Adam steps on the surrogate per outer iteration."""
    ppo_lr: float = 3e-4
    """PPO: Adam learning rate."""
    reptile_epsilon: float = 0.5
    """Reptile: outer interpolation step size."""


@dataclass
class RLTrainConfig:
    iterations: int = 500
    """Outer iterations."""
    meta_batch_size: int = 20
    """Tasks per outer iteration."""
    time_limit_s: float = 0.0
    """Stop (with a checkpoint and the final evaluation) after this many seconds of training; 0 = none."""
    eval_every: int = 0
    """Held-out evaluation every this many iterations (and at the end); 0 = only at the end."""
    checkpoint_every: int = 10
    """Write the checkpoint every this many iterations (and at the end)."""
    log_every: int = 1
    """Log training metrics every this many iterations."""
    threads: int = 0
    """torch.set_num_threads; 0 = leave torch's default."""


@dataclass
class RLEvalConfig:
    num_tasks: int = 40
    """Held-out (test split) tasks."""
    episodes_per_task: int = 20
    """Episodes per task and per adaptation step."""
    steps: int = 3
    """Report returns after 0..steps adaptation steps."""
    seed: int = 12345
    """Seed of the held-out tasks and rollouts: every evaluation sees the same ones."""
    plot_tasks: int = 4
    """Goals whose trajectories (before / after adaptation) are drawn."""


@dataclass
class RLConfig:
    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    train: RLTrainConfig = field(default_factory=RLTrainConfig)
    eval: RLEvalConfig = field(default_factory=RLEvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    seed: int = 0
    """Seed of the policy initialisation, the training tasks and the rollouts."""
    device: str = "cpu"
    """Torch device of envs and policy."""
    run_dir: str = ""
    """Checkpoints, metrics and plots; empty = runs/<env>-<algo>-s<seed>."""
    name: str = ""
    """Run name; empty = <env>-<algo>."""
    config: Optional[str] = None
    """YAML file whose values replace the defaults (flags override it)."""
    resume: bool = False
    """Continue the run in run_dir from its checkpoint."""

    def run_name(self) -> str:
        return self.name or f"{self.env.name}-{self.algo.algo}"

    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir or f"runs/{self.run_name()}-s{self.seed}")

    def validate(self) -> "RLConfig":
        positive = {
            "env.episodes_per_task": self.env.episodes_per_task,
            "policy.init_std": self.policy.init_std,
            "policy.last_layer_scale": self.policy.last_layer_scale,
            "policy.action_scale": self.policy.action_scale,
            "algo.inner_lr": self.algo.inner_lr,
            "algo.inner_steps": self.algo.inner_steps,
            "algo.max_kl": self.algo.max_kl,
            "algo.cg_iters": self.algo.cg_iters,
            "algo.ls_max_steps": self.algo.ls_max_steps,
            "algo.ppo_epochs": self.algo.ppo_epochs,
            "algo.ppo_lr": self.algo.ppo_lr,
            "train.iterations": self.train.iterations,
            "train.meta_batch_size": self.train.meta_batch_size,
            "train.checkpoint_every": self.train.checkpoint_every,
            "train.log_every": self.train.log_every,
            "eval.num_tasks": self.eval.num_tasks,
            "eval.episodes_per_task": self.eval.episodes_per_task,
        }
        check_ranges(
            positive=positive,
            non_negative={"env.horizon": self.env.horizon, "eval.steps": self.eval.steps,
                          "train.eval_every": self.train.eval_every, "train.time_limit_s": self.train.time_limit_s,
                          "train.threads": self.train.threads, "eval.plot_tasks": self.eval.plot_tasks},
            unit_interval={"algo.gamma": self.algo.gamma, "algo.gae_lambda": self.algo.gae_lambda,
                           "algo.ls_backtrack": self.algo.ls_backtrack,
                           "algo.hvp_task_fraction": self.algo.hvp_task_fraction,
                           "algo.reptile_epsilon": self.algo.reptile_epsilon},
        )
        if any(h <= 0 for h in self.policy.hidden):
            raise ConfigError(f"policy.hidden widths must be positive, got {list(self.policy.hidden)}")
        w = self.algo.step_loss_weights
        if w and (len(w) != self.algo.inner_steps or min(w) < 0 or sum(w) <= 0):
            raise ConfigError(f"algo.step_loss_weights needs algo.inner_steps = {self.algo.inner_steps} non-negative "
                              f"weights with a positive sum, got {list(w)}")
        if self.algo.algo == "maml_trpo" and self.algo.hvp == "gauss_newton" and (self.algo.inner_steps > 1
                                                                                   or self.algo.learn_inner_lr):
            raise ConfigError("algo.hvp gauss_newton supports algo.inner_steps = 1 without learn_inner_lr only; "
                              "use autograd")
        if any(not x > 0 for x in self.algo.step_lr_scales):
            raise ConfigError(f"algo.step_lr_scales must be positive, got {list(self.algo.step_lr_scales)}")
        if self.algo.learn_inner_lr and self.algo.algo == "reptile":
            raise ConfigError("algo.learn_inner_lr is for MAML (maml_trpo, maml_ppo), not reptile")
        from envs.batched_registry import known_batched_envs

        if self.env.name not in known_batched_envs():
            raise ConfigError(f"unknown env.name {self.env.name!r}; known: {', '.join(known_batched_envs())}")
        return self
