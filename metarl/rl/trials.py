"""Experience for RL²: trials of N consecutive episodes of one task, the recurrent policy's hidden state carried
from episode to episode and reset between trials.

    per trial (T tasks x E trials side by side, one batched env of T x E sub-envs):
        h = 0, a_prev = 0, r_prev = 0
        for episode n = 0..N-1:   reset the sub-envs (same tasks), then H steps of
            x = (obs, a_prev, r_prev, first step?);  mean, h = policy.step(theta, x, h);  a ~ N(mean, std)
    data = the trial as one sequence of N * H steps (T, E, N * H, ...), with the inputs x kept, advantages by
    GAE across the episode boundaries (a masked step, after an early end, is skipped, not a cut) and the linear
    baseline on the trial's time; the sampling log-probs are PPO's old log-probs.

Evaluation: per task, eval trials of steps + 1 episodes; the return of episode s is the metric "after s steps"
(s episodes of in-context adaptation), the same JSON schema as the gradient-based learners.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from envs.base import TaskBatch, num_tasks
from envs.registry import TaskFamily
from metarl.learners.base import Batch, Learner
from metarl.params import MetaParams, take, to_device
from metarl.rl.advantages import process_rollouts
from metarl.rl.recurrent import GRUGaussianPolicy
from metarl.rl.sampler import _HALF_LOG_2PI, Rollouts, _torch_threads
from metarl.rl.source import RolloutSource


@dataclass
class Trials(Rollouts):
    """Rollouts whose time axis is a trial of `episodes` episodes of `horizon` steps, plus the policy inputs
    (success, when the env reports it: (T, E, N), per episode)."""

    inputs: torch.Tensor = None  # (T, E, N * H, input_dim)
    episodes: int = 1
    horizon: int = 1

    def returns_per_episode(self) -> torch.Tensor:
        """Undiscounted return of each episode of each trial, (T, E, N)."""
        return self.rewards.reshape(*self.rewards.shape[:2], self.episodes, self.horizon).sum(-1)


class TrialSampler:
    """Trials on a `BatchedTaskEnv` of T tasks x E trials: N episodes of H steps each, one policy step for all
    sub-envs per env step. All randomness (reset seeds, action noise) comes from the generator."""

    def __init__(self, env, policy: GRUGaussianPolicy):
        self.env, self.policy = env, policy

    def collect(self, params: dict, tasks: TaskBatch, generator: torch.Generator, episodes: int,
                deterministic: bool = False, shard: tuple[int, int] | None = None) -> Trials:
        with torch.no_grad(), _torch_threads(1 if self.env.steps_on_own_threads else None):
            return self._collect({k: v.detach() for k, v in params.items()}, tasks, generator, episodes,
                                 deterministic, shard)

    def _collect(self, params, tasks, generator, episodes, deterministic, shard) -> Trials:
        env, policy = self.env, self.policy
        T, E, H, M = env.num_tasks, env.episodes_per_task, env.horizon, env.num_envs
        first_task, total = shard or (0, T)
        act_dim = policy.act_dim
        out: dict[str, list[torch.Tensor]] = {k: [] for k in ("obs", "inputs", "actions", "log_probs", "rewards", "mask")}
        h = last_a = last_r = None
        successes = []
        for n in range(episodes):
            seed = int(torch.randint(2**31 - 1, (1,), generator=generator, device=generator.device))
            obs, _ = env.reset(seed=seed, options={"tasks": tasks} if n == 0 else None)
            if h is None:  # a new trial: nothing remembered
                h = policy.initial_state(M, obs)
                last_a, last_r = obs.new_zeros(M, act_dim), obs.new_zeros(M)
            noise = torch.randn((H, total * E, act_dim), generator=generator, device=obs.device, dtype=obs.dtype)
            noise = noise[:, first_task * E: first_task * E + M] * (0.0 if deterministic else 1.0)
            running = torch.ones(M, dtype=torch.bool, device=obs.device)
            first, later = torch.ones(M, device=obs.device), torch.zeros(M, device=obs.device)
            for t in range(H):
                x = policy.inputs(obs, last_a, last_r, first if t == 0 else later)
                mean, log_std, h = policy.step(params, x, h, running)
                act = mean + torch.exp(log_std) * noise[t]
                logp = (-0.5 * noise[t] ** 2 - log_std - _HALF_LOG_2PI).sum(-1)
                next_obs, reward, terminated, _, _ = env.step(act)
                reward = reward.to(obs.dtype) * running
                for k, v in (("obs", obs), ("inputs", x), ("actions", act), ("log_probs", logp), ("rewards", reward),
                             ("mask", running.to(obs.dtype))):
                    out[k].append(v)
                last_a = torch.where(running.unsqueeze(-1), act, last_a)
                last_r = torch.where(running, reward, last_r)
                running = running & ~terminated.to(torch.bool)
                obs = next_obs
            if getattr(env, "episode_success", None) is not None:
                successes.append(env.episode_success.to(obs.device).view(T, E).clone())

        def tasks_first(steps: list[torch.Tensor]) -> torch.Tensor:  # L x (T*E, ...) -> (T, E, L, ...)
            x = torch.stack(steps, 1)
            return x.reshape(T, E, *x.shape[1:])

        return Trials(obs=tasks_first(out["obs"]), actions=tasks_first(out["actions"]),
                      rewards=tasks_first(out["rewards"]), mask=tasks_first(out["mask"]),
                      log_probs=tasks_first(out["log_probs"]), inputs=tasks_first(out["inputs"]), episodes=episodes,
                      horizon=H, success=torch.stack(successes, -1) if successes else None)


class TrialSource(RolloutSource):
    """RolloutSource's sizes, generators and sampler cache, with trials: `episodes` are trials per task."""

    def __init__(self, family: TaskFamily, distribution, policy: GRUGaussianPolicy, meta_batch_size: int, seed: int,
                 device: torch.device, trials_per_task: int, trial_episodes: int, horizon: int,
                 dtype: torch.dtype = torch.float32, gamma: float = 0.99, gae_lambda: float = 1.0,
                 normalize_advantages: bool = True, backend: str = "auto", eval_trials_per_task: int = 20,
                 rank: int = 0, world: int = 1):
        if trial_episodes < 1:
            raise ValueError(f"a trial needs at least one episode, got {trial_episodes}")
        super().__init__(family, distribution, policy, meta_batch_size, seed, device, trials_per_task, horizon, dtype,
                         gamma, gae_lambda, normalize_advantages, False, backend, eval_trials_per_task, rank, world)
        self.trial_episodes = trial_episodes

    def _new_sampler(self, env) -> TrialSampler:
        return TrialSampler(env, self.policy)

    def protocol(self) -> dict[str, Any]:
        return {"trials_per_task": self.eval_episodes, "horizon": self.horizon,
                "adaptation": "in context: step s = episode s of a trial"}

    def train_batch(self, iteration: int, learner: Learner, meta: MetaParams) -> tuple[Batch, dict[str, float]]:
        gen = self.train_generator(iteration)
        tasks = to_device(self.mine(self.dist.sample(self.batch_size, gen, "train")), self.device)
        trials = self.sampler(num_tasks(tasks), self.episodes).collect(
            meta["theta"], tasks, self.rollout_generator(gen), self.trial_episodes, shard=(self.shard[0], self.batch_size))
        data = process_rollouts(trials, self.gamma, self.gae_lambda, self.normalize, carry=True)
        data.update(inputs=trials.inputs, old_log_probs=trials.log_probs)
        returns = trials.returns_per_episode().mean((0, 1))
        metrics = {"return_pre": float(returns[0]), "return_post": float(returns[-1]),
                   **{f"return_episode{n}": float(r) for n, r in enumerate(returns[1:-1], 1)},
                   "env_steps": float(trials.num_steps)}
        if trials.success is not None:
            rate = trials.success.float().mean((0, 1))
            metrics.update(success_pre=float(rate[0]), success_post=float(rate[-1]))
        return Batch(tasks, [data], []), metrics

    def evaluate(self, learner: Learner, meta: MetaParams, tasks: TaskBatch, steps: int, generator: torch.Generator,
                 plot_tasks: int = 0) -> tuple[list[dict[str, torch.Tensor]], dict[str, Any]]:
        """Per episode s = 0..steps of eval trials, per task: the average return of episode s."""
        tasks = to_device(tasks, self.device)
        trials = self.sampler(num_tasks(tasks), self.eval_episodes).collect(
            meta["theta"], tasks, self.rollout_generator(generator), steps + 1)
        per_episode = trials.returns_per_episode().mean(1)  # (T, steps + 1)
        per_step = [{"return": per_episode[:, s],
                     **({} if trials.success is None else {"success": trials.success[:, :, s].float().mean(1)})}
                    for s in range(steps + 1)]
        n, shown, H = min(plot_tasks, num_tasks(tasks)), sorted({0, steps}), trials.horizon
        episode = lambda x, s: x[:n, :3, s * H:(s + 1) * H].cpu()  # noqa: E731
        trace = {"tasks": to_device(take(tasks, slice(n)), "cpu"), "steps": shown,
                 "obs": {s: episode(trials.obs, s) for s in shown}, "mask": {s: episode(trials.mask, s) for s in shown}}
        return per_step, trace
