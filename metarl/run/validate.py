"""The rules of a config, checked once when it is read (before anything is built or written): one-line
ConfigErrors naming the field. Generic rules live here; the rules of an algorithm or an outer step live in its
spec (metarl.algorithms, metarl.outer), asked through their registries: no algorithm is named here.

    ranges              a field outside its range (> 0, >= 0, in (0, 1])
    family              the task family exists; its kind (supervised / RL) suits the algorithm and outer step
    keys                a key the run would ignore, set to anything but its default: the task family's kind,
                        the model, the algorithm (ALGORITHM_KEYS it does not read), the outer step (OUTER_KEYS)
    specs               the algorithm's and the outer step's own rules
"""
from __future__ import annotations

import dataclasses
import inspect
import math

from envs.registry import family as task_family
from metarl.algorithms import ALGORITHMS, algorithm
from metarl.algorithms.rules import get_path, reject_set
from metarl.core.errors import ConfigError
from metarl.outer import OUTER_STEPS
from metarl.run.config import Config, LearnerConfig, OuterConfig, RLSettings

#: keys that only some algorithms read (each spec lists those it reads)
ALGORITHM_KEYS = tuple(f"learner.{f.name}" for f in dataclasses.fields(LearnerConfig) if f.name != "algo") + (
    "rl.trial_episodes", "train.recompute_inner_steps")
#: keys that only some outer steps read (each spec lists those it reads)
OUTER_KEYS = tuple(f"outer.{f.name}" for f in dataclasses.fields(OuterConfig) if f.name != "optimizer") + (
    "train.compile",)
#: the supervised families' keys (unused with an RL family) and the RL families' (unused with a supervised one)
SUPERVISED_KEYS = ("task.k_support", "task.k_query", "eval.k_support", "eval.k_query", "model.arch",
                   "model.input_scale", "model.residual", "model.gated", "model.norm", "model.channels",
                   "model.batch_norm")
RL_KEYS = ("task.horizon", "eval.episodes_per_task", "model.init_std", "model.last_layer_scale", "model.action_scale",
           "learner.estimator") + tuple(f"rl.{f.name}" for f in dataclasses.fields(RLSettings))

POSITIVE = ("task.k_support", "task.k_query", "model.channels", "model.input_scale", "model.init_std",
            "model.last_layer_scale", "model.action_scale", "model.cells", "model.nodes", "learner.inner_steps",
            "learner.inner_lr", "learner.inner_batches", "learner.lstm_hidden", "learner.implicit_lambda", "learner.implicit_cg_steps",
            "learner.weight_net_hidden", "outer.lr", "outer.epochs", "outer.minibatches", "outer.max_kl",
            "outer.cg_iters", "outer.ls_max_steps", "rl.episodes_per_task", "rl.trial_episodes", "train.iterations",
            "train.meta_batch_size", "train.eval_tasks", "train.checkpoint_every", "train.log_every",
            "train.chunk_size", "train.dist_timeout_s", "eval.num_tasks", "eval.k_support", "eval.k_query", "eval.episodes_per_task",
            "eval.batch_size")
NON_NEGATIVE = ("task.horizon", "outer.grad_clip", "outer.ppo_clip", "outer.cg_damping", "learner.retrain_iterations",
                "train.time_limit_s", "train.eval_every", "train.threads", "eval.steps", "eval.plot_tasks",
                "log.wandb_timeout_s")
UNIT_INTERVAL = ("rl.gamma", "rl.gae_lambda", "outer.ls_backtrack", "outer.hvp_task_fraction",
                 "outer.hvp_episode_fraction")


def _floats(cfg, prefix: str = ""):
    """(path, value) of every float field of a nested config."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            yield from _floats(value, f"{prefix}{f.name}.")
        elif isinstance(value, float):
            yield prefix + f.name, value
        elif isinstance(value, tuple) and value and all(isinstance(v, float) for v in value):
            yield from ((f"{prefix}{f.name}", v) for v in value)


def check_ranges(cfg: Config) -> None:
    """ConfigError naming the first field outside its range: finite (every float), > 0, >= 0, or in (0, 1]."""
    for path, value in _floats(cfg):
        if not math.isfinite(value):
            raise ConfigError(f"{path} must be a finite number, got {value!r}")
    for paths, ok, what in ((POSITIVE, lambda v: v > 0, "positive"), (NON_NEGATIVE, lambda v: v >= 0, ">= 0"),
                            (UNIT_INTERVAL, lambda v: 0 < v <= 1, "in (0, 1]")):
        for path in paths:
            value = get_path(cfg, path)
            if not ok(value):
                raise ConfigError(f"{path} must be {what}, got {value!r}")
    if any(h <= 0 for h in cfg.model.hidden):
        raise ConfigError(f"model.hidden widths must be positive, got {list(cfg.model.hidden)}")


def validate(cfg: Config) -> Config:
    try:
        fam = task_family(cfg.task.name)
    except KeyError as e:
        raise ConfigError(f"task.name: {e.args[0]}") from None
    try:
        spec = algorithm(cfg.learner.algo)
    except KeyError as e:
        raise ConfigError(f"learner.algo: {e.args[0]}") from None
    outer = OUTER_STEPS.get(cfg.outer.optimizer)
    if outer is None:
        raise ConfigError(f"outer.optimizer: unknown outer step {cfg.outer.optimizer!r}; known: {', '.join(OUTER_STEPS)}")
    check_ranges(cfg)
    check_task_options(fam, cfg.task.options)
    kind = "rl" if fam.is_rl else "supervised"
    if kind not in spec.kinds:
        raise ConfigError(f"learner.algo {spec.name} learns {' or '.join(spec.kinds)} task families; {fam.name} is "
                          f"{'an RL' if fam.is_rl else 'a supervised'} family")
    if kind not in outer.kinds:
        usable = [s.name for s in OUTER_STEPS.values() if kind in s.kinds]
        raise ConfigError(f"outer.optimizer {outer.name} is an {' / '.join(outer.kinds).upper()} outer step; "
                          f"{fam.name} is a {kind} family: use {' or '.join(usable)}")
    if spec.outer_steps and outer.name not in spec.outer_steps:
        raise ConfigError(f"learner.algo {spec.name} trains with outer.optimizer {' or '.join(spec.outer_steps)}, "
                          f"got {outer.name}")
    if fam.is_rl and cfg.rl.backend != "auto" and cfg.rl.backend not in fam.backends:
        raise ConfigError(f"rl.backend {cfg.rl.backend} is not a backend of {fam.name} "
                          f"({', '.join(fam.backends) or 'it has none to choose'})")
    _check_model(cfg, spec, fam.is_rl)
    if spec.check:
        spec.check(cfg, fam)
    if outer.check:
        outer.check(cfg, spec)
    reject_set(cfg, [k for k in ALGORITHM_KEYS if k not in spec.reads], f"learner.algo {spec.name}")
    reject_set(cfg, [k for k in OUTER_KEYS if k not in outer.reads], f"outer.optimizer {outer.name}")
    reject_set(cfg, RL_KEYS if not fam.is_rl else SUPERVISED_KEYS, f"{'an RL' if fam.is_rl else 'a supervised'} task family")
    if fam.is_rl and not fam.backends:
        reject_set(cfg, ["rl.backend"], f"{fam.name} (no physics backend to choose)")
    if cfg.train.task_batching != "chunks":
        reject_set(cfg, ["train.chunk_size"], f"train.task_batching {cfg.train.task_batching}")
    return cfg


#: task distribution arguments the builder sets itself (not options)
_BUILT = ("dtype", "data")
_OPTION_TYPES = {"int": (int, "an integer"), "float": ((int, float), "a number"), "bool": (bool, "true or false"),
                 "str": (str, "a string")}


def check_task_options(fam, options: dict) -> None:
    """Each task option a keyword of the family's distribution, of its declared type (where it declares a plain
    one); a ConfigError naming the option, not the constructor, otherwise."""
    try:
        params = inspect.signature(fam.distribution).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # a factory that passes its options on (Meta-World): checked where they land
    known = [n for n in params if n not in _BUILT]
    for name, value in options.items():
        if name not in known:
            raise ConfigError(f"task.options.{name} is not an option of {fam.name}; its options: {', '.join(known)}")
        kind = _OPTION_TYPES.get(str(params[name].annotation))
        if kind and (not isinstance(value, kind[0]) or (isinstance(value, bool) and kind[0] is not bool)):
            raise ConfigError(f"task.options.{name} must be {kind[1]}, got {value!r}")


def _check_model(cfg: Config, spec, rl: bool) -> None:
    m = cfg.model
    if rl:
        if spec.policy == "gru":
            reject_set(cfg, ["model.activation", "rl.compile_sampler"], f"learner.algo {spec.name} (a recurrent policy)")
        return
    if m.arch in ("conv", "cells"):
        reject_set(cfg, [f"model.{k}" for k in ("hidden", "activation", "input_scale", "residual", "gated", "norm")],
                   f"model.arch {m.arch}")
    else:
        reject_set(cfg, ["model.channels", "model.batch_norm"], "model.arch mlp")
    if m.arch == "cells":
        reject_set(cfg, ["model.batch_norm"], "model.arch cells")
    else:
        reject_set(cfg, ["model.cells", "model.nodes", "model.genotype"], f"model.arch {m.arch}")
    if m.arch == "cells" and m.genotype:
        from metarl.nets.cells import parse_genotype

        try:
            parse_genotype(m.genotype)
        except ValueError as e:
            raise ConfigError(f"model.genotype: {e}") from None
    if m.arch == "cells" and not m.genotype and not spec.searches_cells:
        searchers = ", ".join(s.name for s in ALGORITHMS.values() if s.searches_cells)
        raise ConfigError(f"model.arch cells without a model.genotype is the search network: learner.algo "
                          f"{searchers} (or give the derived cell as model.genotype)")
