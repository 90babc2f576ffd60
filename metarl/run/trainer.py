"""The one outer loop, for every task family, learner and outer step.

    meta = learner.init_meta_params(), held as one flat vector        (or RUN_DIR/checkpoint.pt with --resume)
    for it in start .. iterations - 1:
        batch = source.train_batch(it, learner, meta)       tasks drawn from (seed, it); this rank's share
                supervised: support and query sets       RL: D_0 = collect(theta), adapt, D_1 = collect(phi_1), ...
        outer.step(flat, batch)                           Adam / SGD on the (compiled) meta-gradient, PPO epochs
                                                          or TRPO; means over tasks all-reduced across ranks
        non-finite loss or gradient: stop, nothing applied, the last good checkpoint stays
        every log_every: log;  every eval_every: held-out evaluation;  every checkpoint_every: checkpoint
        train.time_limit_s reached in this process: checkpoint and stop (continue with --resume)
        Ctrl-C: checkpoint after the current iteration and stop (a second Ctrl-C: at once, last checkpoint kept)
    checkpoint; held-out evaluation -> eval.json, eval.png, episodes.png; learning_curve.png from metrics.jsonl;
    W&B: metrics, plots, checkpoint artifact

Before anything is written: the config is checked and everything built (a bad config is a one-line error),
and an existing run is never overwritten without --resume. A checkpoint holds the meta-parameters, the outer
optimiser's state, the iteration, environment steps and training time; the data of an iteration depend on
(seed, iteration) only, so a resumed run ends with the parameters of an uninterrupted one.
"""
from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from envs.base import EnvFailure
from metarl.core.compiling import compile_with_fallback
from metarl.core.errors import CheckpointError, NonFiniteLossError, RolloutError, TrainingInterrupted
from metarl.core.params import FlatLayout, MetaParams
from metarl.outer.problem import MetaProblem
from metarl.run import distributed, plots
from metarl.run.build import apply_process_settings, build, resolve_device
from metarl.core.files import atomic_write_text
from metarl.run.checkpoint import FORMAT, load_checkpoint, matching_params, save_checkpoint
from metarl.run.config import Config, to_dict
from metarl.run.evaluate import Evaluator, eval_metrics, format_summary
from metarl.run.logger import make_logger
from metarl.run.rundir import RunDir
from metarl.run.stopping import SigtermAsCtrlC, StopOnSignal

# Sections that must match between a checkpoint and the config that resumes it.
_RESUME_MUST_MATCH = ("task", "model", "learner")


class Trainer:
    def __init__(self, cfg: Config, console_write=None):
        self.cfg = cfg
        device = resolve_device(cfg.device)
        apply_process_settings(cfg)
        self.group = distributed.Group(device, cfg.train.dist_timeout_s)
        self.rank, self.world = self.group.rank, self.group.world
        self.parts = build(cfg, self.rank, self.world, device)
        self.learner, self.source, self.device = self.parts.learner, self.parts.source, device
        self.run_dir = cfg.resolved_run_dir()
        self.rundir = RunDir(self.run_dir)
        self.checkpoint_path = self.rundir.checkpoint
        init = self.learner.init_meta_params()
        # All meta-parameters live in one flat vector; self.meta holds views of it. The outer steps update the
        # vector with a few tensor ops, and the compiled meta-gradient takes one tensor instead of a dict.
        self.layout = FlatLayout(init)
        self.flat = self.layout.flatten(init).detach().clone()
        self.meta: MetaParams = self.layout.unflatten(self.flat)
        self.outer = self.parts.outer_step(self.flat)
        compile_fn = (lambda f: compile_with_fallback(f, self, "train.compile")) if cfg.train.compile else None
        self.problem = MetaProblem(self.learner, self.layout, self.group.reducer(self.source.share), compile_fn)
        self.iteration = self.saved_iteration = self.env_steps = 0
        self.elapsed = 0.0
        self.wandb_id: str | None = None
        self._console_write = console_write

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "meta_params": {g: {k: v.detach().cpu() for k, v in d.items()} for g, d in self.meta.items()},
                "optimizer": self.outer.state_dict(), "iteration": self.iteration, "env_steps": self.env_steps,
                "elapsed_s": self.elapsed, "config": to_dict(self.cfg), "wandb_id": self.wandb_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved, current = state["config"], to_dict(self.cfg)
        for section in _RESUME_MUST_MATCH:
            if _without_defaults(saved.get(section, {}), section) != _without_defaults(current[section], section):
                raise CheckpointError(f"checkpoint was written with a different '{section}' config; resume with "
                                      f"the run's own config (saved in {self.run_dir}/config.yaml)")
        saved = matching_params(self.meta, state["meta_params"], f"checkpoint {self.checkpoint_path}")
        for g, d in self.meta.items():
            for k, v in d.items():
                v.copy_(saved[g][k])
        try:
            if state.get("optimizer") is not None:
                self.outer.load_state_dict(state["optimizer"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"checkpoint {self.checkpoint_path} does not match this run's outer step ({e})") from None
        self.iteration = self.saved_iteration = int(state["iteration"])
        self.env_steps, self.elapsed = int(state.get("env_steps", 0)), float(state.get("elapsed_s", 0.0))
        self.wandb_id = state.get("wandb_id")

    def save(self) -> Path | None:
        self.saved_iteration = self.iteration
        if self.rank != 0:
            return None
        return save_checkpoint(self.checkpoint_path, self.state_dict())

    # ------------------------------------------------------------------ loop

    def evaluator(self, num_tasks: int) -> Evaluator:
        e = self.cfg.eval
        return Evaluator(self.source, num_tasks, e.steps, e.batch_size, e.seed, e.plot_tasks,
                         progress=self.cfg.log.progress and self.rank == 0)

    def step(self) -> dict[str, float]:
        """One outer iteration; raises NonFiniteLossError (nothing applied) on a NaN/inf loss or gradient."""
        self.group.iteration = self.iteration + 1  # numbered as the log numbers it
        try:
            batch, metrics = self.source.train_batch(self.iteration, self.learner, self.meta)
        except EnvFailure as e:
            raise RolloutError(self.iteration + 1, str(e), self._kept_checkpoint()) from e
        steps = metrics.pop("env_steps", None)
        if self.world > 1 and metrics:  # this rank's means over its tasks -> means over all tasks
            values = self.problem.reduce(torch.tensor(list(metrics.values()), dtype=torch.float64))[0]
            metrics = dict(zip(metrics, values.tolist()))
        try:
            metrics.update(self.outer.step(self.flat, batch, self.problem, self.iteration))
        except NonFiniteLossError as e:  # numbered as the log numbers iterations: the one that would have been done
            raise NonFiniteLossError(self.iteration + 1, e.value, self._kept_checkpoint()) from None
        if steps is not None:
            self.env_steps += int(self.group.total(steps))
        self.iteration += 1
        return metrics

    def _kept_checkpoint(self) -> str | None:
        """The checkpoint a stopped run leaves behind, if one was written."""
        return str(self.checkpoint_path) if self.checkpoint_path.exists() else None

    def _start(self) -> None:
        """What the run directory holds decides (metarl.run.rundir): --resume loads its checkpoint; a run that
        stopped before its first checkpoint starts over; a checkpointed run is never overwritten without
        --resume. Rank 0 then holds the directory's lock and writes config.yaml."""
        # a group torchrun restarted after a failure (--max-restarts) continues from the last checkpoint
        resume = self.cfg.resume or (distributed.restarted() and self.checkpoint_path.exists())
        action = self.rundir.check(resume)
        if self.rank == 0:
            self.rundir.acquire()
        if action == "resume":
            self.load_state_dict(load_checkpoint(self.checkpoint_path, map_location=self.device))
        self.group.barrier()  # every rank has checked before rank 0 writes
        if self.rank == 0:
            cleared = self.rundir.clear_started() if action == "start" else []
            if action == "start" and resume and not cleared:
                (self._console_write or print)(f"nothing to resume in {self.run_dir}: starting at iteration 0")
            if cleared:
                (self._console_write or print)(f"{self.run_dir} held a run that stopped before its first checkpoint "
                                               f"({', '.join(cleared)}): starting it over at iteration 0")
            atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(to_dict(self.cfg), sort_keys=False))

    def run(self) -> dict[str, Any]:
        self._start()
        try:
            return self._run()
        except TrainingInterrupted as stopped:
            stopped.quiet = self.rank != 0  # every rank stops together; rank 0 alone says so
            raise
        finally:
            self.rundir.release()

    def _run(self) -> dict[str, Any]:
        cfg, tc = self.cfg, self.cfg.train
        log_cfg = cfg.log if self.rank == 0 else type(cfg.log)(wandb="disabled", console=False, jsonl=False, progress=False)
        bar = tqdm(total=tc.iterations, initial=self.iteration, desc=cfg.run_name(), disable=not log_cfg.progress,
                   dynamic_ncols=True, mininterval=1.0)
        write = self._console_write or (lambda s: tqdm.write(s))
        logger = make_logger(log_cfg, self.run_dir, to_dict(cfg), cfg.run_name(), write, self.wandb_id)
        self.wandb_id = logger.wandb_run_id
        t0, start, elapsed0 = time.perf_counter(), self.iteration, self.elapsed
        waited0 = self.group.collective_s
        headline = "return_post" if self.parts.family.is_rl else "meta_loss"
        sigterm = None  # set once the final evaluation starts
        try:
            # every rank gets the signal (a terminal's Ctrl-C, torchrun passing SIGTERM on); rank 0 alone speaks
            with StopOnSignal(write if self.rank == 0 else lambda s: None) as stop_signal:
                stopped = self._loop(logger, bar, t0, start, elapsed0, waited0, headline, stop_signal)
                if stopped:  # saved with the handlers still in place: a copy of the same SIGTERM is not a second
                    self.save()
            if stopped:
                why = stop_signal.reason or "another rank's Ctrl-C or SIGTERM"
                stopped_by = TrainingInterrupted(f"stopped at iteration {self.iteration} on {why}, with its checkpoint "
                                                 f"{self.checkpoint_path}; continue with the same command plus --resume")
                if stop_signal.signum:  # 130 for Ctrl-C, 143 for SIGTERM: what a shell reports for such an end
                    stopped_by.exit_code = 128 + stop_signal.signum
                raise stopped_by
            bar.close()
            if self.saved_iteration != self.iteration:
                self.save()
            result: dict[str, Any] = {"iterations": self.iteration, "iterations_run": self.iteration - start,
                                      "train_seconds": time.perf_counter() - t0, "elapsed_s": self.elapsed,
                                      "env_steps": self.env_steps, "stopped_early": self.iteration < tc.iterations,
                                      "checkpoint": self.checkpoint_path}
            if self.rank == 0:
                evaluator = self.evaluator(cfg.eval.num_tasks)
                with SigtermAsCtrlC() as sigterm:
                    summary = evaluator.run(self.learner, self.meta)
                    summary["iteration"] = self.iteration
                    paths = evaluator.write(summary, self.run_dir)
                    # logged before the curve is drawn from metrics.jsonl, so that the curve shows the final evaluation
                    logger.log(eval_metrics(summary), step=self.iteration)
                    curve = plots.save_learning_curve(self.run_dir, f"{cfg.run_name()}: training curve",
                                                      trials=self.parts.algorithm.in_context)
                    if curve is not None:
                        paths["learning_curve"] = curve
                    logger.log_summary(eval_metrics(summary))
                    for name, path in paths.items():
                        if path.suffix == ".png":
                            logger.log_image(f"eval/{name}", path, step=self.iteration)
                    logger.log_artifact(self.checkpoint_path, f"{cfg.run_name()}-checkpoint", "model")
                result.update(eval=summary, table=format_summary(summary), paths=paths)
            return result
        except KeyboardInterrupt:
            if sigterm is not None:  # training had finished and saved: only the final evaluation is lost
                stopped_by = TrainingInterrupted(
                    f"interrupted during the final evaluation ({'SIGTERM' if sigterm.signum else 'Ctrl-C'}): the "
                    f"checkpoint of iteration {self.iteration} is kept at {self.checkpoint_path}; the same command "
                    "plus --resume evaluates it")
                stopped_by.exit_code = 128 + (sigterm.signum or signal.SIGINT)
                raise stopped_by from None
            if self.checkpoint_path.exists():
                raise TrainingInterrupted(f"interrupted at iteration {self.iteration + 1}: the checkpoint of iteration "
                                          f"{self.saved_iteration} survived at {self.checkpoint_path}; continue with "
                                          "the same command plus --resume") from None
            raise TrainingInterrupted(f"interrupted at iteration {self.iteration + 1}, before the first checkpoint: run "
                                      "the same command again to start over") from None
        finally:
            bar.close()
            logger.close()

    def _loop(self, logger, bar, t0: float, start: int, elapsed0: float, waited0: float, headline: str,
              stop_signal: StopOnSignal) -> bool:
        """Iterations until train.iterations or the time limit; True when stopped by Ctrl-C or SIGTERM (on any
        rank)."""
        cfg, tc = self.cfg, self.cfg.train
        while self.iteration < tc.iterations:
            metrics = self.step()
            seconds = time.perf_counter() - t0
            self.elapsed = elapsed0 + seconds
            bar.update(1)
            it = self.iteration
            if it % tc.log_every == 0 or it == tc.iterations:
                extra = {"env_steps": self.env_steps} if self.env_steps else {}
                if self.world > 1:  # the share of the time spent in collectives, since this process started
                    extra["time/collective_fraction"] = (self.group.collective_s - waited0) / seconds
                logger.log({**{f"train/{k}": v for k, v in metrics.items()}, **extra,
                            "time/iter_per_s": (it - start) / seconds}, step=it)
                bar.set_postfix({headline: f"{metrics[headline]:.4g}"})
            # one collective per iteration: every rank stops after the same one (a second only to say why)
            stop = self.group.any(stop_signal.requested or bool(tc.time_limit_s) and seconds >= tc.time_limit_s)
            if stop and self.group.any(stop_signal.requested):
                return True
            if it % tc.checkpoint_every == 0 or stop:
                self.save()
            if tc.eval_every and it % tc.eval_every == 0 and it < tc.iterations and self.rank == 0:
                logger.log(eval_metrics(self.evaluator(min(tc.eval_tasks, cfg.eval.num_tasks)).run(self.learner, self.meta)), step=it)
            if stop:  # the time limit
                break
        return False


def _without_defaults(section: dict[str, Any], name: str) -> dict[str, Any]:
    """A config section without the keys at their default value (so a checkpoint written before a new
    option existed still resumes)."""
    defaults = to_dict(Config())[name]
    return {k: v for k, v in section.items() if defaults.get(k, object()) != v}


def run(cfg: Config, console_write=None) -> dict[str, Any]:
    """Train `cfg`, then the algorithm's own work after training, if its spec has any (`after_run`: e.g. an
    architecture search derives its cell and retrains it)."""
    trainer = Trainer(cfg, console_write)
    result = trainer.run()
    after = trainer.parts.algorithm.after_run
    result = after(trainer, result, console_write) if after else result
    trainer.group.close()  # ranks leave together, once rank 0 has written the checkpoint and the evaluation
    return result
