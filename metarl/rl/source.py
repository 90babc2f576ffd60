"""Experience of RL task families (H > 1): rollouts of the adapting policy, on one batched sampler.

A learner with an inner loop (MAML, Reptile, ...): one collection per inner step,
    D_0     = collect(theta)                    T tasks x E episodes x H steps in one batched loop (rl.sampler)
    state_s = learner.adapt(state_{s-1}, D_{s-1})       no graph: the learner's own inner step
    D_s     = collect(params(state_s))          s = 1..k: each adapted policy collects the next data
    batch   = support [D_0 .. D_{k-1}], query [D_1 .. D_k] with the sampling policy's outputs attached
              (old_mean, old_log_std, old_log_probs: TRPO's KL and PPO's ratio are relative to them)
The learner's meta-loss then re-takes the same steps with the graph. The held-out evaluation runs the same
loop for k = eval.steps and scores each D_s by its average return (the MAML paper's protocol).

A learner that adapts in context (RL²): T tasks x E trials of N episodes, the recurrent policy's memory carried
across the episodes of a trial; returns and GAE flow across its episodes (a masked step after an early end is
skipped, not a cut); the sampling log-probs are the old ones. Held out, "after s steps" is episode s of fresh
trials of eval.steps + 1 episodes, in the same JSON schema.
"""
from __future__ import annotations

from typing import Any

import torch

from envs.base import TaskBatch, num_tasks
from envs.registry import TaskFamily
from metarl.algorithms.base import Batch, InContextLearner, Learner
from metarl.core.params import MetaParams, expand, take, to_device
from metarl.core.source import Source
from metarl.nets.policies import batched_outputs, gaussian_log_prob
from metarl.rl.advantages import process_rollouts
from metarl.rl.sampler import BatchedSampler, Rollouts


class RolloutSource(Source):
    headline = "return"

    def __init__(self, family: TaskFamily, distribution, policy, meta_batch_size: int, seed: int,
                 device: torch.device, episodes_per_task: int, horizon: int, dtype: torch.dtype = torch.float32,
                 gamma: float = 0.99, gae_lambda: float = 1.0, normalize_advantages: bool = True,
                 compile: bool = False, backend: str = "auto", eval_episodes_per_task: int = 20, rank: int = 0,
                 world: int = 1):
        super().__init__(distribution, meta_batch_size, seed, device, rank, world)
        self.family, self.policy = family, policy
        self.episodes, self.eval_episodes, self.horizon = episodes_per_task, eval_episodes_per_task, horizon
        self.dtype = dtype
        self.gamma, self.gae_lambda, self.normalize = gamma, gae_lambda, normalize_advantages
        self.compile = compile
        self.env_kwargs = {"backend": backend} if family.backends else {}
        self._samplers: dict[tuple[int, int], BatchedSampler] = {}

    def sampler(self, num_tasks: int, episodes: int) -> BatchedSampler:
        """The batched env and sampler for num_tasks x episodes (built once per size)."""
        key = (num_tasks, episodes)
        if key not in self._samplers:
            env = self.family.batched_env(self.dist, num_tasks, episodes, self.horizon, device=self.device,
                                          dtype=self.dtype, **self.env_kwargs)
            self._samplers[key] = BatchedSampler(env, self.policy, compile=self.compile)
        return self._samplers[key]

    def protocol(self, learner: Learner) -> dict[str, Any]:
        if isinstance(learner, InContextLearner):
            return {"trials_per_task": self.eval_episodes, "horizon": self.horizon,
                    "adaptation": "in context: step s = episode s of a trial"}
        return {"episodes_per_task": self.eval_episodes, "horizon": self.horizon}

    def rollout_generator(self, generator: torch.Generator) -> torch.Generator:
        """A generator on the rollout device, seeded from `generator`."""
        seed = int(torch.randint(2**62, (1,), generator=generator))
        return torch.Generator(device=self.device).manual_seed(seed)

    def _train_tasks(self, iteration: int) -> tuple[TaskBatch, torch.Generator]:
        gen = self.train_generator(iteration)
        return to_device(self.mine(self.dist.sample(self.batch_size, gen, "train")), self.device), gen

    def rollout_path(self, learner: Learner, meta: MetaParams, tasks: TaskBatch, steps: int, collections: int,
                     generator: torch.Generator, episodes: int, shard: tuple[int, int] | None = None):
        """`collections` collections, the first with theta, then one after each inner step (steps of them):
        [(data, rollouts, params)] per collection."""
        T = num_tasks(tasks)
        sampler = self.sampler(T, episodes)
        state = learner.start(meta)
        params = learner.params(meta, state)  # shared by all tasks: one plain policy call per env step
        out = []
        for s in range(collections):
            r = sampler.collect(params, tasks, generator, shard=shard)
            data = process_rollouts(r, self.gamma, self.gae_lambda, self.normalize)
            out.append((data, r, params))
            if s < steps:
                state = learner.adapt(meta, expand(state, T) if s == 0 else state, data, s)
                params = learner.batch_params(meta, state)
        return out

    def trials(self, learner: InContextLearner, meta: MetaParams, tasks: TaskBatch, episodes: int,
               generator: torch.Generator, trials: int, shard: tuple[int, int] | None = None) -> Rollouts:
        """`trials` trials of `episodes` episodes per task, with the learner's shared meta-parameters."""
        return self.sampler(num_tasks(tasks), trials).collect(learner.policy_params(meta), tasks,
                                                              self.rollout_generator(generator), shard=shard,
                                                              episodes=episodes)

    def train_batch(self, iteration: int, learner: Learner, meta: MetaParams) -> tuple[Batch, dict[str, float]]:
        tasks, gen = self._train_tasks(iteration)
        shard = (self.shard[0], self.batch_size)
        if isinstance(learner, InContextLearner):
            r = self.trials(learner, meta, tasks, learner.trial_episodes, gen, self.episodes, shard)
            data = process_rollouts(r, self.gamma, self.gae_lambda, self.normalize, carry=True)
            data.update(inputs=r.inputs, old_log_probs=r.log_probs)
            returns = r.returns_per_episode().mean((0, 1))
            metrics = {"return_pre": float(returns[0]), "return_post": float(returns[-1]),
                       **{f"return_episode{n}": float(x) for n, x in enumerate(returns[1:-1], 1)},
                       "env_steps": float(r.num_steps)}
            runs = [r]
            batch = Batch(tasks, [data], [], *self.place)
        else:
            k = learner.inner_steps
            path = self.rollout_path(learner, meta, tasks, k, k + int(learner.needs_query),
                                     self.rollout_generator(gen), self.episodes, shard)
            support = [d for d, _, _ in path[:k]]
            query = [with_old_policy(self.policy, d, p) for d, _, p in path[1:]] if learner.needs_query else []
            returns = [float(r.episode_returns.mean()) for _, r, _ in path]
            metrics = {"return_pre": returns[0], **{f"return_step{s}": x for s, x in enumerate(returns[1:-1], 1)},
                       "return_post": returns[-1], "env_steps": float(sum(r.num_steps for _, r, _ in path))}
            runs = [r for _, r, _ in path]
            batch = Batch(tasks, support, query, *self.place)
        first, last = runs[0], runs[-1]  # before adaptation (first episode of a trial), after it (last episode)
        metrics.update(episode_length_pre=float(first.episode_lengths()[..., 0].mean()),
                       episode_length_post=float(last.episode_lengths()[..., -1].mean()))
        if first.reward_terms:  # what each reward term adds to an episode's return (MuJoCo)
            metrics.update({f"reward_{k}_pre": float(v[..., 0].mean()) for k, v in first.reward_terms.items()})
            metrics.update({f"reward_{k}_post": float(v[..., -1].mean()) for k, v in last.reward_terms.items()})
        if runs[0].success is not None:  # Meta-World: the success rate before and after adaptation
            metrics.update(success_pre=float(runs[0].success[..., 0].float().mean()),
                           success_post=float(runs[-1].success[..., -1].float().mean()))
        return batch, metrics

    def evaluate(self, learner: Learner, meta: MetaParams, tasks: TaskBatch, steps: int, generator: torch.Generator,
                 plot_tasks: int = 0) -> tuple[list[dict[str, torch.Tensor]], dict[str, Any]]:
        """Per step 0..steps, per task: the average return of fresh episodes of the policy after that many
        steps (each step adapts on the previous step's episodes; in context: episode s of fresh trials); and a
        trace of a few tasks' trajectories."""
        tasks = to_device(tasks, self.device)
        if isinstance(learner, InContextLearner):
            r = self.trials(learner, meta, tasks, steps + 1, generator, self.eval_episodes)
            H = self.horizon
            runs = [(r.returns_per_episode()[:, :, s], r, slice(s * H, (s + 1) * H), s) for s in range(steps + 1)]
        else:
            path = self.rollout_path(learner, meta, tasks, steps, steps + 1, self.rollout_generator(generator),
                                     self.eval_episodes)
            runs = [(r.episode_returns, r, slice(None), 0) for _, r, _ in path]
        per_step = [{"return": returns.mean(1),
                     **({} if r.success is None else {"success": r.success[..., episode].float().mean(1)})}
                    for returns, r, _, episode in runs]
        n, shown = min(plot_tasks, num_tasks(tasks)), sorted({0, steps})
        trace = {"tasks": to_device(take(tasks, slice(n)), "cpu"), "steps": shown,
                 "obs": {s: runs[s][1].obs[:n, :3, runs[s][2]].cpu() for s in shown},
                 "mask": {s: runs[s][1].mask[:n, :3, runs[s][2]].cpu() for s in shown}}
        return per_step, trace


def with_old_policy(policy, data: dict, params: dict) -> dict:
    """The query data plus the distribution of the policy that sampled it (per-task params)."""
    with torch.no_grad():
        mean, log_std = batched_outputs(policy, params, data["obs"])
        return {**data, "old_mean": mean, "old_log_std": log_std,
                "old_log_probs": gaussian_log_prob(mean, log_std, data["actions"])}
