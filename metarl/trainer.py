"""The outer loop of supervised meta-learning (H = 1 tasks).

    meta = learner.init_meta_params()                      # or restored from RUN_DIR/checkpoint.pt
    for it in start .. iterations-1:
        episode = next meta-batch of B tasks from the "train" split   # task parameters are data, resampled
                  (drawn S iterations at a time from a generator seeded by (seed, rank, it // S))
        grads, loss = learner.meta_gradient(meta, episode.support, episode.query)
        if loss or grads are not finite: stop; the last good checkpoint stays
        (torch.distributed: grads averaged over ranks, each rank with its own tasks)
        optimizer.step(grads, lr(it))                       # Adam / SGD; Reptile's interpolation is SGD
        every log_every:        log training metrics
        every eval_every:       held-out evaluation (train.eval_tasks test tasks, 0..eval.steps steps)
        every checkpoint_every: atomic checkpoint (meta-params, optimiser, schedule, RNG state, config)
    final held-out evaluation on eval.num_tasks tasks -> eval.json, eval.png; checkpoint -> W&B artifact
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from envs.supervised import Episode
from metarl import build, distributed
from metarl.checkpoint import load_checkpoint, save_checkpoint
from metarl.compiling import compile_with_fallback
from metarl.config import Config, to_dict
from metarl.errors import CheckpointError, ConfigError, NonFiniteLossError
from metarl.evaluate import Evaluator, format_summary
from metarl.learners.base import MetaParams, flat_tensors
from metarl.logger import make_logger
from metarl.optim import cosine_lr

# Sections that must match between a checkpoint and the config that resumes it.
_RESUME_MUST_MATCH = ("task", "model", "learner")
# Training episodes are drawn for several iterations at once (one sampling call instead of S): at most
# this many tensor elements per block, at most _MAX_BLOCK iterations.
_BLOCK_ELEMENTS = 1 << 20
_MAX_BLOCK = 64


class Trainer:
    def __init__(self, cfg: Config, console_write=None):
        self.cfg = cfg
        self.device = build.resolve_device(cfg.device)
        self.run_dir = cfg.resolved_run_dir()
        self.checkpoint_path = self.run_dir / "checkpoint.pt"
        self.rank, self.world = distributed.rank_and_world()
        self.dist = build.build_task_distribution(cfg)
        init_gen = torch.Generator().manual_seed(cfg.seed)
        self.model = build.build_model(cfg, self.dist, init_gen)
        self.learner = build.build_learner(cfg, self.model, self.dist, self.device)
        # All meta-parameters live in one flat vector; self.meta holds views of it by group and name. The
        # outer optimiser updates the vector with a few tensor ops, and the compiled meta-gradient takes one
        # tensor instead of a dict (fewer guards to check per call).
        init = self.learner.init_meta_params()
        self._layout = [(g, k, t.shape) for g, d in init.items() for k, t in d.items()]
        self.flat = torch.cat([t.detach().reshape(-1) for t in flat_tensors(init)])
        self.meta: MetaParams = self._unflatten(self.flat)
        self.optimizer = build.build_optimizer(cfg, self.flat)
        self.iteration = 0
        self._block: tuple[int, list] = (-1, [])
        self.block_iterations = self._block_iterations()
        self.wandb_id: str | None = None
        self._console_write = console_write
        self._meta_gradient = self._flat_meta_gradient
        if cfg.train.compile:
            self._meta_gradient = compile_with_fallback(self._flat_meta_gradient, self, "train.compile")

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {
            "meta_params": {g: {k: v.detach().cpu() for k, v in d.items()} for g, d in self.meta.items()},
            "optimizer": self.optimizer.state_dict(),
            "iteration": self.iteration,
            "config": to_dict(self.cfg),
            "wandb_id": self.wandb_id,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("config", {})
        current = to_dict(self.cfg)
        for section in _RESUME_MUST_MATCH:
            if saved.get(section) != current[section]:
                raise CheckpointError(f"checkpoint was written with a different '{section}' config; "
                                      f"resume with the run's own config (saved in {self.run_dir}/config.yaml)")
        try:
            for g, d in self.meta.items():
                for k, v in d.items():
                    v.copy_(state["meta_params"][g][k].to(v))
            self.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"checkpoint {self.checkpoint_path} does not match this run ({e})") from None
        self.iteration = int(state["iteration"])
        self.wandb_id = state.get("wandb_id")

    def save(self) -> Path | None:
        if self.rank != 0:
            return None
        return save_checkpoint(self.checkpoint_path, self.state_dict())

    # ------------------------------------------------------------------ loop

    def evaluator(self, num_tasks: int) -> Evaluator:
        e = self.cfg.eval
        return Evaluator(self.dist, num_tasks, e.k_support, e.k_query, e.steps, e.batch_size, e.seed, self.device)

    def _block_iterations(self) -> int:
        t = self.cfg.task
        probe = self.dist.sample_episode(1, t.k_support, t.k_query, torch.Generator().manual_seed(0), "train")
        elements = sum(x.numel() for x in (*probe.support, *probe.query)) * self.cfg.train.meta_batch_size
        return max(1, min(_MAX_BLOCK, _BLOCK_ELEMENTS // max(1, elements)))

    def _episode(self) -> Episode:
        """The training meta-batch of this iteration. A block of S iterations is drawn at once from a
        generator seeded by (seed, rank, block index): the stream depends on nothing else, so a resumed run
        sees the same tasks, and ranks see different ones."""
        t, B, S = self.cfg.task, self.cfg.train.meta_batch_size, self.block_iterations
        index, offset = divmod(self.iteration, S)
        if self._block[0] != index:
            gen = torch.Generator().manual_seed(((self.cfg.seed * 1_000_003 + self.rank) * 1_000_003 + index) % 2**63)
            ep = self.dist.sample_episode(S * B, t.k_support, t.k_query, gen, "train").to(self.device)
            self._block = (index, [_slice(ep, i * B, (i + 1) * B) for i in range(S)])
        return self._block[1][offset]

    def _unflatten(self, flat: torch.Tensor) -> MetaParams:
        meta: MetaParams = {}
        offset = 0
        for g, k, shape in self._layout:
            n = shape.numel()
            meta.setdefault(g, {})[k] = flat[offset : offset + n].view(shape)
            offset += n
        return meta

    def _flat_meta_gradient(self, flat: torch.Tensor, support, query):
        grads, loss, metrics = self.learner.meta_gradient(self._unflatten(flat), support, query)
        grad = torch.cat([g.reshape(-1) for g in flat_tensors(grads)])
        return grad, loss, metrics, torch.linalg.vector_norm(grad)

    def lr(self) -> float:
        """The outer learning rate of the current iteration."""
        tc = self.cfg.train
        return cosine_lr(tc.lr, self.iteration, tc.iterations) if tc.lr_decay == "cosine" else tc.lr

    def step(self) -> dict[str, float]:
        """One outer iteration; raises NonFiniteLossError (nothing applied) on a NaN/inf loss or gradient."""
        ep = self._episode()
        grad, loss, metrics, grad_norm = self._meta_gradient(self.flat, ep.support, ep.query)
        if self.world > 1:
            distributed.average_([grad])
            loss = distributed.average_scalar(loss)
            grad_norm = torch.linalg.vector_norm(grad)
        loss_f, norm_f = float(loss), float(grad_norm)
        if not (math.isfinite(loss_f) and math.isfinite(norm_f)):
            kept = str(self.checkpoint_path) if self.checkpoint_path.exists() else None
            raise NonFiniteLossError(self.iteration, loss_f if not math.isfinite(loss_f) else norm_f, kept)
        clip = self.cfg.train.grad_clip
        if clip > 0 and norm_f > clip:  # clip_grad_norm_'s rule, with the norm already at hand
            grad = grad * (clip / (norm_f + 1e-6))
        self.optimizer.step(grad, self.lr())
        self.iteration += 1
        return {"train/meta_loss": loss_f, "train/grad_norm": norm_f, **{f"train/{k}": float(v) for k, v in metrics.items()}}

    def run(self) -> dict[str, Any]:
        cfg, tc = self.cfg, self.cfg.train
        if cfg.resume:
            self.load_state_dict(load_checkpoint(self.checkpoint_path, map_location=self.device))
        elif self.checkpoint_path.exists() and self.rank == 0:
            raise ConfigError(f"{self.checkpoint_path} exists: pass --resume to continue that run, "
                              f"or choose another --run_dir")
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            import yaml

            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        log_cfg = cfg.log if self.rank == 0 else type(cfg.log)(wandb="disabled", console=False, jsonl=False, progress=False)
        bar = tqdm(total=tc.iterations, initial=self.iteration, desc=cfg.run_name(), disable=not log_cfg.progress,
                   dynamic_ncols=True, mininterval=1.0)
        write = self._console_write or (lambda s: tqdm.write(s))
        logger = make_logger(log_cfg, self.run_dir, to_dict(cfg), cfg.run_name(), write, self.wandb_id)
        self.wandb_id = logger.wandb_run_id
        t0, done_at_start = time.perf_counter(), self.iteration
        try:
            while self.iteration < tc.iterations:
                metrics = self.step()
                bar.update(1)
                it = self.iteration
                if it % tc.log_every == 0 or it == tc.iterations:
                    metrics["time/iter_per_s"] = (it - done_at_start) / (time.perf_counter() - t0)
                    logger.log(metrics, step=it)
                    bar.set_postfix(loss=f"{metrics['train/meta_loss']:.4f}")
                if tc.eval_every and it % tc.eval_every == 0 and it < tc.iterations and self.rank == 0:
                    summary = self.evaluator(tc.eval_tasks).run(self.learner, self.meta)
                    logger.log(_eval_metrics(summary), step=it)
                if it % tc.checkpoint_every == 0:
                    self.save()
            bar.close()
            self.save()
            result: dict[str, Any] = {"iterations": self.iteration, "train_seconds": time.perf_counter() - t0}
            if self.rank == 0:
                evaluator = self.evaluator(cfg.eval.num_tasks)
                summary = evaluator.run(self.learner, self.meta)
                evaluator.write(summary, self.learner, self.meta, self.run_dir / "eval.json",
                                self.run_dir / "eval.png", cfg.eval.plot_tasks)
                logger.log(_eval_metrics(summary), step=self.iteration)
                logger.log_summary(_eval_metrics(summary))
                logger.log_image("eval/plot", self.run_dir / "eval.png", step=self.iteration)
                logger.log_artifact(self.checkpoint_path, f"{cfg.run_name()}-checkpoint", "model")
                result["eval"] = summary
                result["table"] = format_summary(summary)
            return result
        finally:
            bar.close()
            logger.close()


def _slice(ep: Episode, lo: int, hi: int) -> Episode:
    cut = lambda d: tuple(x[lo:hi] for x in d)  # noqa: E731
    return Episode({k: v[lo:hi] for k, v in ep.tasks.items()}, cut(ep.support), cut(ep.query))


def _eval_metrics(summary: dict[str, Any]) -> dict[str, float]:
    out = {}
    for name in ("loss", "accuracy"):
        if name in summary:
            for s, m in zip(summary["steps"], summary[name]["mean"]):
                out[f"eval/{name}_step{s}"] = m
    return out
