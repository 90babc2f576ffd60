"""Checkpoints: written atomically (temp file, fsync, rename), loaded without executing code (weights_only).

One format for every task family (FORMAT): {"format", "meta_params": {group: {name: tensor}}, "optimizer",
"iteration", "env_steps", "elapsed_s", "config", "wandb_id"}. Checkpoints of metarl 0.1 (the separate
supervised and meta-RL stacks) are upgraded on load (metarl.run.migrate).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from metarl.core.errors import CheckpointError
from metarl.core.files import atomic_write

FORMAT = 2


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write `state` to `path` so that a crash or a full disk at any moment leaves the old or the new file whole
    (a failed write is a one-line WriteError)."""
    return atomic_write(path, lambda f: torch.save(state, f))


def checkpoint_path(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run directory's checkpoint.pt."""
    path = Path(path)
    return path / "checkpoint.pt" if path.is_dir() else path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint (a file or a run directory; upgraded to FORMAT); a missing, corrupt or foreign file
    raises CheckpointError, without running any code from it (weights_only)."""
    path = checkpoint_path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # torch's notes on refused pickles: the one-line error below says it
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated / foreign / malicious files
        raise CheckpointError(f"checkpoint {path} is corrupt or not a metarl checkpoint ({type(e).__name__})") from None
    if not isinstance(state, dict) or "meta_params" not in state or "config" not in state:
        raise CheckpointError(f"checkpoint {path} is not a metarl checkpoint (no meta_params or config)")
    if state.get("format", 1) > FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {state['format']}, newer than this metarl ({FORMAT})")
    if state.get("format", 1) < FORMAT:
        from metarl.run.migrate import upgrade

        return upgrade(state, FORMAT)
    return state


def matching_params(built: dict, saved: dict, where: str) -> dict:
    """The saved meta-parameters, checked against the built learner's group by group and tensor by tensor (the
    same names, shapes and dtypes), as tensors like the built ones; a CheckpointError naming the first that
    differs (e.g. a checkpoint of a 40x40 network evaluated with --model.hidden 7)."""
    out = {}
    for g, group in built.items():
        for k, v in group.items():
            s = saved.get(g, {}).get(k)
            if s is None:
                raise CheckpointError(f"{where} has no meta-parameter {g}.{k}: it was written by another learner or model")
            if tuple(s.shape) != tuple(v.shape) or s.dtype != v.dtype:
                raise CheckpointError(f"{where}: meta-parameter {g}.{k} is {tuple(s.shape)} {str(s.dtype)[6:]}, the "
                                      f"model built from the config has {tuple(v.shape)} {str(v.dtype)[6:]}")
            out.setdefault(g, {})[k] = s.to(v.device)
    extra = [f"{g}.{k}" for g, group in saved.items() for k in group if k not in built.get(g, {})]
    if extra:
        raise CheckpointError(f"{where} holds meta-parameters this learner does not have ({', '.join(extra[:3])})")
    return out
