"""Meta-World's own meta-learning evaluation (`metaworld.evaluation.metalearning_evaluation`) of a trained run:
an adapter from a built run (metarl.run.evaluate.load_run) to its agent protocol, and the repeated evaluation
with 95% CIs.

    per split (train goals, held-out test goals), per repeat r = 1..R (the next goal of every sub-env):
        agent.init();  k times: adaptation episodes with adapt_action / step, then agent.adapt()
        evaluation episodes with eval_action: success = the success flag at any step of an episode
    report: success rate (and return) mean +- 95% CI over the R repeats (Student's t), per split

A learner with inner steps (MAML, Reptile) adapts by its own inner step on the adaptation episodes (the same
advantages as training: per-task linear baseline and GAE); eval_action is the adapted policy's mean. A learner
that adapts in context (RL²) steps its recurrent policy exactly as the sampler does (policy.act, its Memory),
through adaptation and evaluation alike (adapt() does nothing); the eval envs carry the previous action, reward
and done in the observation (Meta-World's recurrent_info_in_obs) so that the memory sees rewards during the
evaluation episodes too; it starts empty at init() only.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarl.core.files import atomic_write, atomic_write_text
from metarl.core.params import expand
from metarl.core.stats import seed_mean_ci95
from metarl.nets.policies import batched_outputs
from metarl.rl.advantages import process_rollouts
from metarl.rl.sampler import Rollouts


class RunAgent:
    """metaworld.evaluation.MetaLearningAgent for a built run: its learner, policy and meta-parameters."""

    def __init__(self, run, meta, generator: torch.Generator):
        self.run, self.learner, self.policy, self.meta, self.generator = run, run.learner, run.model, meta, generator
        self.in_context = run.algorithm.in_context
        self.dtype = next(iter(meta["theta"].values())).dtype
        self.device = torch.device(run.device)

    def init(self) -> None:
        self.memory, self.state, self.params, self.s, self.buffer = None, None, None, 0, []

    def _outputs(self, obs: np.ndarray):
        x = torch.as_tensor(obs, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            if not self.in_context:
                if self.params is None:
                    self.params = expand(self.learner.params(self.meta, self.learner.start(self.meta)), x.shape[0])
                mean, log_std = batched_outputs(self.policy, self.params, x[:, None])
                return mean[:, 0], log_std[:, 0]
            if self.memory is None:
                self.memory = self.policy.start(x.shape[0], x)
            o = self.policy.obs_dim
            if x.shape[1] == o + self.policy.act_dim + 2:  # Meta-World's recurrent info: (obs, a, r, done)
                reward = torch.where(self.memory.first, self.memory.reward, x[:, o + self.policy.act_dim])
                self.memory = dataclasses.replace(self.memory, reward=reward)
            mean, log_std, self.memory, _ = self.policy.act(self.meta["theta"], x[:, :o], self.memory)
            return mean, log_std

    def _act(self, obs: np.ndarray, sample: bool) -> np.ndarray:
        mean, log_std = self._outputs(obs)
        act = mean + log_std.exp() * torch.randn(mean.shape, generator=self.generator, dtype=mean.dtype).to(
            mean.device) if sample else mean
        if self.in_context:
            self.memory = self.memory.after_step(act, self.memory.reward, torch.ones_like(self.memory.first))
        return act.cpu().numpy().astype(np.float64)

    def adapt_action(self, obs: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return self._act(obs, sample=True), {}

    def eval_action(self, obs: np.ndarray) -> np.ndarray:
        return self._act(obs, sample=False)

    def step(self, timestep) -> None:
        if not self.in_context:
            self.buffer.append(timestep)
            return
        done = torch.as_tensor(np.logical_or(timestep.terminated, timestep.truncated), device=self.device)
        reward = torch.as_tensor(timestep.reward, dtype=self.dtype, device=self.device)
        self.memory = dataclasses.replace(self.memory, reward=reward, first=done)

    def adapt(self) -> None:
        """One inner step per sub-env on its adaptation episodes (all of Meta-World's length: no early end); in
        context: nothing (the memory has read them)."""
        if self.in_context:
            return
        n, steps = self.buffer[0].observation.shape[0], len(self.buffer)
        ends = np.logical_or(np.stack([t.terminated for t in self.buffer]), np.stack([t.truncated for t in self.buffer]))
        horizon = int(np.argmax(ends[:, 0])) + 1
        if steps % horizon or not ends[horizon - 1 :: horizon].all():
            raise RuntimeError("adaptation episodes of different lengths (terminate_on_success must be off)")
        as_t = lambda name: torch.as_tensor(  # noqa: E731  (steps, n, ...) -> (n, episodes, horizon, ...)
            np.stack([getattr(t, name) for t in self.buffer]), dtype=self.dtype, device=self.device
        ).movedim(0, 1).reshape(n, steps // horizon, horizon, *np.shape(getattr(self.buffer[0], name))[1:])
        rewards = as_t("reward")
        rollouts = Rollouts(obs=as_t("observation"), actions=as_t("action"), rewards=rewards,
                            mask=torch.ones_like(rewards), log_probs=torch.zeros_like(rewards))
        rl = self.run.cfg.rl
        data = process_rollouts(rollouts, rl.gamma, rl.gae_lambda, rl.normalize_advantages)
        state = self.state if self.state is not None else expand(self.learner.start(self.meta), n)
        self.state = self.learner.adapt(self.meta, state, data, self.s)
        self.params = self.learner.batch_params(self.meta, self.state)
        self.s, self.buffer = self.s + 1, []

    def reset(self, env_mask: np.ndarray) -> None:
        """An episode ended in the masked sub-envs: the next step is a first step (the memory carries on)."""
        if self.memory is not None:
            self.memory = self.memory.new_episode(torch.as_tensor(env_mask, device=self.device))


def evaluate(run, meta, iteration: int, checkpoint: str | Path, out: str | Path, repeats: int = 10,
             meta_batch_size: int = 0, adaptation_episodes: int = 10, evaluation_episodes: int = 3, seed: int = 12345,
             max_episode_steps: int = 0, command: str = "") -> dict[str, Any]:
    """Meta-World's metalearning_evaluation of a built MetaWorldML1 / ML10 run on the train and test goals.
    max_episode_steps: the episodes' length there; 0 = Meta-World's own (its max_path_length, 500). The JSON
    also says how it was made: `command` (when given) and the wall time."""
    start = time.perf_counter()
    from metaworld.evaluation import metalearning_evaluation

    from envs.meta_world import MAX_PATH_LENGTH

    cfg, dist = run.cfg, run.dist
    if not dist.name.startswith("MetaWorld"):
        raise ValueError(f"{checkpoint} is a {dist.name} run: Meta-World's evaluation needs a MetaWorldML1/ML10 one")
    recurrent = run.algorithm.in_context
    steps = 1 if recurrent else max(1, cfg.eval.steps)
    result: dict[str, Any] = {"checkpoint": str(checkpoint), "iteration": iteration, "algo": cfg.learner.algo,
                              "benchmark": dist.benchmark, "env_name": dist.env_name, "versions": dist.versions,
                              "protocol": {"repeats": repeats, "meta_batch_size": meta_batch_size,
                                           "adaptation_steps": steps, "adaptation_episodes": adaptation_episodes,
                                           "evaluation_episodes": evaluation_episodes,
                                           "max_episode_steps": max_episode_steps or MAX_PATH_LENGTH,
                                           "success": "the success flag at any step (metaworld.evaluation)"}}
    for split in ("train", "test"):
        # 0: one sub-env per skill. Meta-World's evaluation counts, per skill, the first evaluation_episodes
        # episodes to end, and with termination on success the successes end first: more sub-envs of a skill
        # than that bias the score upward (10 sub-envs of ML1 reach, 1 evaluation episode: 60 % and 100 % on the
        # train and test goals for an RL² policy scored 10 % and 28 % with one sub-env)
        sub_envs = meta_batch_size or len(dist.classes[split])
        envs = official_envs(dist, split, sub_envs, seed, recurrent, max_episode_steps)
        agent = RunAgent(run, meta, torch.Generator().manual_seed(seed))
        successes, returns = [], []
        for _ in range(repeats):  # each repeat: the next goal of every sub-env
            success, mean_return, _ = metalearning_evaluation(agent, envs, num_evals=1, adaptation_steps=steps,
                                                              adaptation_episodes=adaptation_episodes,
                                                              evaluation_episodes=evaluation_episodes)
            successes.append(success)
            returns.append(mean_return)
        envs.close()
        mean, ci = seed_mean_ci95(successes)
        result[split] = {"sub_envs": sub_envs, "success_mean": mean, "success_ci95": ci, "success_per_repeat": successes,
                         "return_mean": float(np.mean(returns)), "return_per_repeat": returns}
    if command:
        result["command"] = command
    result["wall_s"] = round(time.perf_counter() - start, 1)
    out = atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    _plot(result, out.with_suffix(".png"))
    return result


def official_envs(dist, split: str, meta_batch_size: int, seed: int, recurrent: bool, max_episode_steps: int = 0):
    """Meta-World's own vector env of a split, as `gym.make_vec("Meta-World/<bench>-<split>")` builds it, but through
    metaworld.make_ml_envs_train / _test: in Meta-World 3.1.1 both ML1 ids build the *test* split (their
    registration's lambda reads the loop's `split` late), so the train score would silently be the test one."""
    import metaworld

    kwargs: dict[str, Any] = dict(meta_batch_size=meta_batch_size, vector_strategy="sync", seed=seed,
                                  reward_function_version=dist.reward_version)
    if recurrent:
        kwargs.update(recurrent_info_in_obs=True, normalize_reward_in_recurrent_info=False)
    if max_episode_steps:
        kwargs["max_episode_steps"] = max_episode_steps
    make = metaworld.make_ml_envs_train if split == "train" else metaworld.make_ml_envs_test
    return make(dist.env_name if dist.benchmark == "ML1" else dist.benchmark, **kwargs)


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    splits = ["train", "test"]
    means = [100 * result[s]["success_mean"] for s in splits]
    cis = [100 * np.nan_to_num(result[s]["success_ci95"]) for s in splits]
    ax.bar(splits, means, yerr=cis, capsize=6, color=["tab:blue", "tab:orange"])
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{result['algo']} on {result['benchmark']} {result['env_name']}".strip(), fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, dpi=120, format="png"))
    plt.close(fig)
