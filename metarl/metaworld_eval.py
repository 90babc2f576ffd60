"""Meta-World's own meta-learning evaluation (`metaworld.evaluation.metalearning_evaluation`) of a trained run:
adapters from the project's learners to its agent protocol, and the repeated evaluation with 95% CIs.

    per split (train goals, held-out test goals), per repeat r = 1..R (the next goal of every sub-env):
        agent.init();  k times: adaptation episodes with adapt_action / step, then agent.adapt()
        evaluation episodes with eval_action: success = the success flag at any step of an episode
    report: success rate (and return) mean +- 95% CI over the R repeats (Student's t), per split

GradientAgent: MAML-style learners adapt by their own inner step on the adaptation episodes (the same
advantages as training: per-task linear baseline and GAE); eval_action is the adapted policy's mean.
RecurrentAgent: RL²'s GRU reads the episodes in context (adapt() does nothing); the eval envs carry the
previous action, reward and done in the observation (Meta-World's recurrent_info_in_obs) so that the
recurrence sees rewards during the evaluation episodes too; its state starts at zero at init() only.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarl.params import expand
from metarl.rl.advantages import process_rollouts
from metarl.rl.policy import batched_policy_outputs
from metarl.rl.sampler import Rollouts
from metarl.stats import seed_mean_ci95


class GradientAgent:
    """metaworld.evaluation.MetaLearningAgent for a learner with inner steps (MAML, Reptile)."""

    def __init__(self, learner, meta, policy, generator: torch.Generator, gamma: float = 0.99, gae_lambda: float = 1.0,
                 normalize: bool = True, device: torch.device | str = "cpu"):
        self.learner, self.meta, self.policy, self.generator = learner, meta, policy, generator
        self.gamma, self.gae_lambda, self.normalize, self.device = gamma, gae_lambda, normalize, torch.device(device)
        self.dtype = next(iter(meta["theta"].values())).dtype

    def init(self) -> None:
        self.state, self.params, self.s, self.buffer = None, None, 0, []

    def _params(self, n: int) -> dict:
        if self.params is None:
            self.params = expand(self.learner.params(self.meta, self.learner.start(self.meta)), n)
        return self.params

    def _outputs(self, obs: np.ndarray):
        x = torch.as_tensor(obs, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            mean, log_std = batched_policy_outputs(self.policy, self._params(x.shape[0]), x[:, None])
        return mean[:, 0], log_std[:, 0]

    def adapt_action(self, obs: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        mean, log_std = self._outputs(obs)
        noise = torch.randn(mean.shape, generator=self.generator, dtype=mean.dtype).to(mean.device)
        return (mean + log_std.exp() * noise).cpu().numpy().astype(np.float64), {}

    def step(self, timestep) -> None:
        self.buffer.append(timestep)

    def adapt(self) -> None:
        """One inner step per sub-env on its adaptation episodes (all of Meta-World's length: no early end)."""
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
        data = process_rollouts(rollouts, self.gamma, self.gae_lambda, self.normalize)
        state = self.state if self.state is not None else expand(self.learner.start(self.meta), n)
        self.state = self.learner.adapt(self.meta, state, data, self.s)
        self.params = self.learner.batch_params(self.meta, self.state)
        self.s, self.buffer = self.s + 1, []

    def eval_action(self, obs: np.ndarray) -> np.ndarray:
        return self._outputs(obs)[0].cpu().numpy().astype(np.float64)

    def reset(self, env_mask: np.ndarray) -> None:
        pass


class RecurrentAgent:
    """metaworld.evaluation.MetaLearningAgent for RL²: the GRU's state carries through adaptation and evaluation."""

    def __init__(self, policy, meta, generator: torch.Generator, device: torch.device | str = "cpu"):
        self.policy, self.theta, self.generator = policy, meta["theta"], generator
        self.device, self.dtype = torch.device(device), next(iter(meta["theta"].values())).dtype
        self.obs_dim, self.act_dim = policy.obs_dim, policy.act_dim

    def init(self) -> None:
        self.h = None  # a new trial

    def _act(self, obs: np.ndarray, sample: bool) -> np.ndarray:
        x = torch.as_tensor(obs, dtype=self.dtype, device=self.device)
        n = x.shape[0]
        if self.h is None:
            self.h = self.policy.initial_state(n, x)
            self.last_a, self.last_r = x.new_zeros(n, self.act_dim), x.new_zeros(n)
            self.first = torch.ones(n, dtype=torch.bool, device=x.device)
        if x.shape[1] == self.obs_dim + self.act_dim + 2:  # Meta-World's recurrent info: (obs, a, r, done)
            self.last_r = torch.where(self.first, self.last_r, x[:, self.obs_dim + self.act_dim])
        inputs = self.policy.inputs(x[:, : self.obs_dim], self.last_a, self.last_r, self.first)
        with torch.no_grad():
            mean, log_std, self.h = self.policy.step(self.theta, inputs, self.h)
        act = mean + log_std.exp() * torch.randn(mean.shape, generator=self.generator, dtype=mean.dtype).to(mean.device) \
            if sample else mean
        self.last_a, self.first = act, torch.zeros_like(self.first)
        return act.cpu().numpy().astype(np.float64)

    def adapt_action(self, obs: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return self._act(obs, sample=True), {}

    def step(self, timestep) -> None:
        self.last_r = torch.as_tensor(timestep.reward, dtype=self.dtype, device=self.device)
        self.first = torch.as_tensor(np.logical_or(timestep.terminated, timestep.truncated), device=self.device)

    def adapt(self) -> None:
        pass  # in context

    def eval_action(self, obs: np.ndarray) -> np.ndarray:
        return self._act(obs, sample=False)

    def reset(self, env_mask: np.ndarray) -> None:
        """An episode ended in the masked sub-envs: the next step is a first step (the state carries on)."""
        if getattr(self, "h", None) is not None:
            self.first = self.first | torch.as_tensor(env_mask, device=self.device)


def evaluate(checkpoint: str | Path, out: str | Path, repeats: int = 10, meta_batch_size: int = 0,
             adaptation_episodes: int = 10, evaluation_episodes: int = 3, seed: int = 12345,
             flags: list[str] = (), max_episode_steps: int = 0, command: str = "") -> dict[str, Any]:
    """Meta-World's metalearning_evaluation of a MetaWorldML1 / ML10 checkpoint on the train and test goals.
    max_episode_steps: the episodes' length there; 0 = Meta-World's own (its max_path_length, 500). The JSON
    also says how it was made: `command` (when given) and the wall time."""
    start = time.perf_counter()
    from metaworld.evaluation import metalearning_evaluation

    from envs.meta_world import MAX_PATH_LENGTH
    from metarl.evaluate import load_run

    cfg, run, meta, state = load_run(checkpoint, flags)
    dist = run.dist
    if not dist.name.startswith("MetaWorld"):
        raise ValueError(f"{checkpoint} is a {dist.name} run: Meta-World's evaluation needs a MetaWorldML1/ML10 one")
    recurrent = cfg.learner.algo == "rl2"
    steps = 1 if recurrent else max(1, cfg.eval.steps)
    result: dict[str, Any] = {"checkpoint": str(checkpoint), "iteration": state["iteration"], "algo": cfg.learner.algo,
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
        generator = torch.Generator().manual_seed(seed)
        agent = RecurrentAgent(run.model, meta, generator) if recurrent else GradientAgent(
            run.learner, meta, run.model, generator, cfg.rl.gamma, cfg.rl.gae_lambda, cfg.rl.normalize_advantages)
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
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
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
    fig.savefig(path, dpi=120)
    plt.close(fig)
