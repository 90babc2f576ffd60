"""Checkpoints of metarl 0.1 (the separate supervised and meta-RL stacks) in today's format: config keys moved
to the one schema, Meta-SGD step sizes of meta-RL runs moved to their own parameter group."""
from __future__ import annotations

import warnings
from typing import Any

from metarl.core.errors import CheckpointError
from metarl.run.config import flatten_dict, nest_dict


# metarl 0.1 meta-RL config key -> its place in the one schema
_RL_KEYS = {
    "env.name": "task.name", "env.horizon": "task.horizon", "env.episodes_per_task": "rl.episodes_per_task",
    **{f"policy.{k}": f"model.{k}" for k in ("hidden", "activation", "init_std", "last_layer_scale", "action_scale")},
    **{f"algo.{k}": f"learner.{k}" for k in ("first_order", "estimator", "inner_lr", "step_lr_scales",
                                             "learn_inner_lr", "inner_steps", "step_loss_weights")},
    **{f"algo.{k}": f"rl.{k}" for k in ("gamma", "gae_lambda", "normalize_advantages")},
    **{f"algo.{k}": f"outer.{k}" for k in ("max_kl", "cg_iters", "cg_damping", "ls_max_steps", "ls_backtrack",
                                           "hvp_task_fraction", "hvp", "ppo_clip")},
    "algo.ppo_epochs": "outer.epochs", "algo.ppo_lr": "outer.lr",
    **{f"train.{k}": f"train.{k}" for k in ("iterations", "meta_batch_size", "time_limit_s", "eval_every",
                                            "checkpoint_every", "log_every", "threads")},
    **{f"eval.{k}": f"eval.{k}" for k in ("num_tasks", "episodes_per_task", "steps", "seed", "plot_tasks")},
}
#: kept even at their default values
_ALWAYS = ("task.name", "learner.algo", "outer.optimizer")
_SUPERVISED_MOVED = {f"train.{k}": f"outer.{k}" for k in ("optimizer", "lr", "lr_decay", "grad_clip")}


def upgrade(state: dict[str, Any], format: int) -> dict[str, Any]:
    """A metarl 0.1 checkpoint in FORMAT: config keys moved to the one schema, Meta-SGD step sizes of
    meta-RL runs from "theta" entries "log_inner_lr.<name>" to their own group."""
    old = flatten_dict(state["config"], keep=("options",))
    if "env.name" in old:  # the meta-RL stack
        new = {_RL_KEYS[k]: v for k, v in old.items() if k in _RL_KEYS}
        new.update({k: v for k, v in old.items() if k.split(".")[0] in ("log", "seed", "device", "run_dir", "name")})
        algo = old.get("algo.algo", "maml_trpo")
        new["learner.algo"] = "reptile" if algo == "reptile" else "maml"
        new["outer.optimizer"] = {"maml_trpo": "trpo", "maml_ppo": "ppo", "reptile": "sgd"}[algo]
        if algo == "reptile":
            new["outer.lr"] = old.get("algo.reptile_epsilon", 0.5)
        theta = state["meta_params"]["theta"]
        prefix = "log_inner_lr."
        meta = {"theta": {k: v for k, v in theta.items() if not k.startswith(prefix)}}
        if any(k.startswith(prefix) for k in theta):
            meta["log_inner_lr"] = {k[len(prefix):]: v for k, v in theta.items() if k.startswith(prefix)}
        if algo == "maml_ppo" and state.get("algo", {}).get("adam"):
            warnings.warn("upgraded a metarl 0.1 PPO checkpoint: its Adam moments are not carried over", UserWarning)
        optimizer = None
    else:
        new = {_SUPERVISED_MOVED.get(k, k): v for k, v in old.items()}
        meta, optimizer = state["meta_params"], state.get("optimizer")
    return {"format": format, "meta_params": meta, "optimizer": optimizer, "iteration": int(state.get("iteration", 0)),
            "env_steps": int(state.get("env_steps", 0)), "elapsed_s": float(state.get("elapsed_s", 0.0)),
            "config": _without_unused(new), "wandb_id": state.get("wandb_id")}


def _without_unused(flat: dict[str, Any]) -> dict[str, Any]:
    """The config dict without the keys its family and algorithm do not use (0.1 configs listed them all)."""
    from metarl.core.errors import ConfigError
    from metarl.run.config import Config, from_dict, to_dict

    defaults = flatten_dict(to_dict(Config()), keep=("options",))
    try:
        from_dict(Config, nest_dict(flat))
    except ConfigError as e:
        raise CheckpointError(f"a metarl 0.1 checkpoint whose config cannot be upgraded ({e})") from None
    kept = {k: v for k, v in flat.items() if k not in defaults or v != defaults[k] or k in _ALWAYS}
    while True:  # drop, one at a time, each key the run would ignore (0.1 configs listed them all)
        try:
            from_dict(Config, nest_dict(kept)).validate()
            return nest_dict(kept)
        except ConfigError as e:
            key = str(e).split(" ", 1)[0]
            if " is not used with " not in str(e) or key not in kept or key in _ALWAYS:
                raise CheckpointError(f"a metarl 0.1 checkpoint whose config cannot be upgraded ({e})") from None
            del kept[key]
