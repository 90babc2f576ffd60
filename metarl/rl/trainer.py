"""The meta-RL outer loop.

    tasks_gen, rollout_gen = Generator(seed + 1), Generator(seed + 2)       (restored on resume)
    theta = policy init (seeded)                                            (or the checkpoint's)
    for it in start .. iterations - 1:
        tasks = dist.sample(meta_batch_size, tasks_gen, "train")
        collect(params) = process(sampler.collect(params, tasks, rollout_gen))   # T x E x H in one loop
        theta, metrics = algo.iteration(theta, T, collect)
            MAML: support <- collect(theta); phi <- inner step; query <- collect(phi); TRPO / PPO on theta
            Reptile: k x (collect, inner step); theta <- theta + eps (mean phi - theta)
        log metrics (keyed by iteration, with env steps); checkpoint every N (atomic); eval every M
    checkpoint; held-out evaluation at 0..k steps -> eval.json, eval.png, trajectories.png, logger
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from envs.batched_registry import make_batched_env
from metarl.checkpoint import load_checkpoint, save_checkpoint
from metarl.config import to_dict
from metarl.errors import CheckpointError, NonFiniteLossError
from metarl.rl.advantages import process_rollouts
from metarl.rl.build import RLRun, build_rl
from metarl.rl.config import RLConfig
from metarl.rl.evaluate import evaluate_rl, save_evaluation
from metarl.rl.sampler import BatchedSampler


class RLTrainer:
    """Runs `RLConfig` end to end: training, checkpoints (resumable), final held-out evaluation."""

    def __init__(self, cfg: RLConfig, logger=None):
        self.cfg = cfg
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.run: RLRun = build_rl(cfg)
        self.run_dir = cfg.resolved_run_dir()
        self.ckpt_path = self.run_dir / "checkpoint.pt"
        self.logger = logger
        T = cfg.train.meta_batch_size
        self.env = make_batched_env(cfg.env.name, T, cfg.env.episodes_per_task, self.run.horizon, device=self.run.device)
        self.sampler = BatchedSampler(self.env, self.run.policy)
        self.task_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.rollout_gen = torch.Generator(device=self.run.device).manual_seed(cfg.seed + 2)
        self.theta = self.run.algo.init_params()
        self.iteration = 0
        self.env_steps = 0
        self.elapsed = 0.0
        if cfg.resume:
            self._load()

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "meta_params": {"theta": {k: v.detach().cpu() for k, v in self.theta.items()}},
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "elapsed_s": self.elapsed,
            "task_gen": self.task_gen.get_state(),
            "rollout_gen": self.rollout_gen.get_state(),
            "algo": self.run.algo.state_dict(),
            "config": to_dict(self.cfg),
        }

    def _load(self) -> None:
        if not self.ckpt_path.is_file():
            raise CheckpointError(f"--resume: no checkpoint at {self.ckpt_path}")
        s = load_checkpoint(self.ckpt_path)
        theta = s["meta_params"]["theta"]
        if set(theta) != set(self.theta) or any(theta[k].shape != self.theta[k].shape for k in theta):
            raise CheckpointError(f"checkpoint {self.ckpt_path} holds a different policy than the config")
        self.theta = {k: v.to(self.run.device) for k, v in theta.items()}
        self.iteration, self.env_steps, self.elapsed = s["iteration"], s["env_steps"], s["elapsed_s"]
        self.task_gen.set_state(s["task_gen"])
        self.rollout_gen.set_state(s["rollout_gen"])
        self.run.algo.load_state_dict(s["algo"])

    def save(self) -> Path:
        return save_checkpoint(self.ckpt_path, self.state_dict())

    # ------------------------------------------------------------------ loop
    def _collect_fn(self, tasks):
        a = self.cfg.algo

        def collect(params):
            r = self.sampler.collect(params, tasks, self.rollout_gen)
            self.env_steps += r.num_steps
            return process_rollouts(r, a.gamma, a.gae_lambda, a.normalize_advantages), float(r.episode_returns.mean())

        return collect

    def train_step(self) -> dict[str, float]:
        T = self.cfg.train.meta_batch_size
        tasks = self.run.dist.sample(T, self.task_gen, "train")
        tasks = {k: v.to(self.run.device) for k, v in tasks.items()}
        self.theta, metrics = self.run.algo.iteration(self.theta, T, self._collect_fn(tasks))
        self.iteration += 1
        bad = [k for k, v in metrics.items() if not torch.isfinite(torch.tensor(v))]
        if bad or not all(bool(torch.isfinite(v).all()) for v in self.theta.values()):
            ckpt = str(self.ckpt_path) if self.ckpt_path.is_file() else None
            raise NonFiniteLossError(self.iteration, metrics.get(bad[0], float("nan")) if bad else float("nan"), ckpt)
        return metrics

    def evaluate(self, num_tasks: int | None = None) -> dict[str, Any]:
        result = evaluate_rl(self.cfg, self.run, self.theta, num_tasks)
        result["iteration"] = self.iteration
        save_evaluation(result, self.run_dir, self.logger, self.iteration)
        return result

    def run_training(self) -> dict[str, Any]:
        c = self.cfg.train
        start_time = time.perf_counter() - self.elapsed
        bar = tqdm(total=c.iterations, initial=self.iteration, disable=not self.cfg.log.progress, desc="meta-RL")
        while self.iteration < c.iterations:
            metrics = self.train_step()
            self.elapsed = time.perf_counter() - start_time
            bar.update(1)
            bar.set_postfix(pre=f"{metrics['return_pre']:.1f}", post=f"{metrics['return_post']:.1f}")
            if self.logger is not None and self.iteration % c.log_every == 0:
                self.logger.log({**{f"train/{k}": v for k, v in metrics.items()}, "env_steps": self.env_steps,
                                 "time_s": self.elapsed}, self.iteration)
            out_of_time = c.time_limit_s and self.elapsed >= c.time_limit_s
            if self.iteration % c.checkpoint_every == 0 or out_of_time:
                self.save()
            if c.eval_every and self.iteration % c.eval_every == 0 and self.iteration < c.iterations:
                self.evaluate()
            if out_of_time:
                break
        bar.close()
        self.save()
        result = self.evaluate()
        result["train_time_s"] = self.elapsed
        result["env_steps"] = self.env_steps
        return result
