"""The outer loop of supervised meta-learning (H = 1 tasks).

    meta = learner.init_meta_params()                      # or restored from RUN_DIR/checkpoint.pt
    for it in start .. iterations-1:
        episode = dist.sample_episode(B, K, Q, train_gen, "train")   # task parameters are data, resampled
        grads, loss = learner.meta_gradient(meta, episode.support, episode.query)
        if loss or grads are not finite: stop; the last good checkpoint stays
        (torch.distributed: grads averaged over ranks, each rank with its own tasks)
        optimizer.step(grads)                               # Adam / SGD; Reptile's interpolation is SGD
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

from metarl import build, distributed
from metarl.checkpoint import load_checkpoint, save_checkpoint
from metarl.config import Config, to_dict
from metarl.errors import CheckpointError, ConfigError, NonFiniteLossError
from metarl.evaluate import Evaluator, format_summary
from metarl.learners.base import MetaParams, flat_tensors
from metarl.logger import make_logger

# Sections that must match between a checkpoint and the config that resumes it.
_RESUME_MUST_MATCH = ("task", "model", "learner")


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
        self.meta: MetaParams = self.learner.init_meta_params()
        self.optimizer = build.build_optimizer(cfg, flat_tensors(self.meta))
        self.scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=cfg.train.iterations)
                          if cfg.train.lr_decay == "cosine" else None)
        # The training task stream: its own generator, offset per rank so ranks see different tasks.
        self.train_gen = torch.Generator().manual_seed(cfg.seed * 7919 + 1 + self.rank)
        self.iteration = 0
        self.wandb_id: str | None = None
        self._console_write = console_write
        self._meta_gradient = self.learner.meta_gradient
        if cfg.train.compile:
            self._meta_gradient = torch.compile(self.learner.meta_gradient, dynamic=False)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {
            "meta_params": {g: {k: v.detach().cpu() for k, v in d.items()} for g, d in self.meta.items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "train_generator": self.train_gen.get_state(),
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
            if self.scheduler and state.get("scheduler"):
                self.scheduler.load_state_dict(state["scheduler"])
            self.train_gen.set_state(state["train_generator"])
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

    def _episode(self):
        t = self.cfg.task
        ep = self.dist.sample_episode(self.cfg.train.meta_batch_size, t.k_support, t.k_query, self.train_gen, "train")
        return ep.to(self.device)

    def step(self) -> dict[str, float]:
        """One outer iteration; raises NonFiniteLossError (nothing applied) on a NaN/inf loss or gradient."""
        ep = self._episode()
        grads, loss, metrics = self._meta_gradient(self.meta, ep.support, ep.query)
        grad_list = flat_tensors(grads)
        if self.world > 1:
            distributed.average_(grad_list)
            loss = distributed.average_scalar(loss)
        grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grad_list]))
        loss_f, norm_f = float(loss), float(grad_norm)
        if not (math.isfinite(loss_f) and math.isfinite(norm_f)):
            kept = str(self.checkpoint_path) if self.checkpoint_path.exists() else None
            raise NonFiniteLossError(self.iteration, loss_f if not math.isfinite(loss_f) else norm_f, kept)
        for p, g in zip(flat_tensors(self.meta), grad_list):
            p.grad = g.detach()
        if self.cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(flat_tensors(self.meta), self.cfg.train.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler:
            self.scheduler.step()
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


def _eval_metrics(summary: dict[str, Any]) -> dict[str, float]:
    out = {}
    for name in ("loss", "accuracy"):
        if name in summary:
            for s, m in zip(summary["steps"], summary[name]["mean"]):
                out[f"eval/{name}_step{s}"] = m
    return out
