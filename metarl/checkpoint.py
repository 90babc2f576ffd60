"""Checkpoints: written atomically (temp file, fsync, rename), loaded without executing code (weights_only).

One format for every task family (FORMAT): {"format", "meta_params": {group: {name: tensor}}, "optimizer",
"iteration", "env_steps", "elapsed_s", "config", "wandb_id"}. Checkpoints of metarl 0.1 (the separate
supervised and meta-RL stacks) are upgraded on load.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from metarl.errors import CheckpointError

FORMAT = 2


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write `state` to `path` so that a crash at any moment leaves either the old or the new file whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint (upgraded to FORMAT); a missing, corrupt or foreign file raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated / foreign files
        raise CheckpointError(f"checkpoint {path} is corrupt or not a metarl checkpoint ({type(e).__name__})") from None
    if not isinstance(state, dict) or "meta_params" not in state or "config" not in state:
        raise CheckpointError(f"checkpoint {path} is not a metarl checkpoint (no meta_params or config)")
    if state.get("format", 1) > FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {state['format']}, newer than this metarl ({FORMAT})")
    return upgrade(state) if state.get("format", 1) < FORMAT else state


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
_SUPERVISED_MOVED = {f"train.{k}": f"outer.{k}" for k in ("optimizer", "lr", "lr_decay", "grad_clip")}


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) and k != "options" else {prefix + k: v})
    return out


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, v in flat.items():
        *parents, last = path.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = v
    return out


def upgrade(state: dict[str, Any]) -> dict[str, Any]:
    """A metarl 0.1 checkpoint in FORMAT: config keys moved to the one schema, Meta-SGD step sizes of
    meta-RL runs from "theta" entries "log_inner_lr.<name>" to their own group."""
    old = _flatten(state["config"])
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
    return {"format": FORMAT, "meta_params": meta, "optimizer": optimizer, "iteration": int(state.get("iteration", 0)),
            "env_steps": int(state.get("env_steps", 0)), "elapsed_s": float(state.get("elapsed_s", 0.0)),
            "config": _without_unused(new), "wandb_id": state.get("wandb_id")}


def _without_unused(flat: dict[str, Any]) -> dict[str, Any]:
    """The config dict without the keys its family and algorithm do not use (0.1 configs listed them all)."""
    from envs.registry import family
    from metarl.config import Config, from_dict, unused_keys
    from metarl.errors import ConfigError

    try:
        cfg = from_dict(Config, _nest(flat))
        fam = family(cfg.task.name)
    except (ConfigError, KeyError) as e:
        raise CheckpointError(f"a metarl 0.1 checkpoint whose config cannot be upgraded ({e})") from None
    unused = unused_keys(cfg, fam.is_rl, bool(fam.backends))
    return _nest({k: v for k, v in flat.items() if k not in unused})
