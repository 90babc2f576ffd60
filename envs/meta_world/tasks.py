"""Meta-World (Farama, 3.x) as task families: ML1 (one manipulation skill, 50 train / 50 test goals) and ML10
(10 train skills, 5 held-out test skills), with the train/test task split of Meta-World itself.

    pip install -e .[metaworld]          # Meta-World 3.1.1 (it pins MuJoCo 3.3.0); the default install needs none

Task parameters are data: a task is an index into the benchmark's train or test task list (and its skill's
index among the split's classes). The batched env is a Gymnasium vector env (sync by default, async with
`vector: async`: one worker process per sub-env) of Meta-World's own sub-env constructor (its wrappers: time
limit, task selection, episode statistics), T tasks x E episodes; each iteration gives every sub-env its task
through Meta-World's task-select wrapper (`tasks` set to the one task, taken at the next reset). The goal is hidden
from the observation (Meta-World's ML setting), so the policy must find it. `episode_success` records, per
sub-env, whether the success flag was raised at any step of the episode (Meta-World's success criterion).

A sub-env that raises during a rollout (in a worker or in process) becomes an EnvFailure naming the family,
which the trainer turns into a stop that keeps the last checkpoint.
"""
from __future__ import annotations

from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs.base import EnvFailure, Split, TaskBatch, TaskDistribution
from envs.batched import BatchedTaskEnv

#: Meta-World's episode length (max_path_length of every v3 env)
MAX_PATH_LENGTH = 500
REWARD_VERSIONS = ("v1", "v2")


def _import_metaworld():
    try:
        import metaworld
    except ImportError:
        raise ImportError("Meta-World is not installed: pip install -e .[metaworld] (Meta-World 3.1.1, which "
                          "pins MuJoCo 3.3.0)") from None
    return metaworld


class MetaWorldTasks(TaskDistribution):
    """ML1 (`benchmark: ML1`, `env_name` e.g. reach-v3, push-v3, pick-place-v3) or ML10 task distribution.

    sample(n) draws goals uniformly from the split's task list; for ML10, n / (number of the split's skills)
    tasks of each skill, in the split's skill order (each sub-env of the vector env is one skill)."""

    def __init__(self, benchmark: str = "ML1", env_name: str = "reach-v3", reward_version: str = "v2",
                 split_seed: int = 0, vector: str = "sync"):
        if benchmark not in ("ML1", "ML10"):
            raise ValueError(f"benchmark must be ML1 or ML10, got {benchmark!r}")
        if reward_version not in REWARD_VERSIONS:
            raise ValueError(f"reward_version must be v1 or v2, got {reward_version!r}")
        if vector not in ("sync", "async"):
            raise ValueError(f"vector must be sync or async, got {vector!r}")
        mw = _import_metaworld()
        if benchmark == "ML1":
            if env_name not in mw.ML1.ENV_NAMES:
                raise ValueError(f"unknown Meta-World env {env_name!r}; e.g. reach-v3, push-v3, pick-place-v3")
            bench = mw.ML1(env_name, seed=split_seed)
        else:
            bench = mw.ML10(seed=split_seed)
        self.name = f"MetaWorld{benchmark}"
        self.benchmark, self.env_name, self.reward_version, self.vector = benchmark, env_name, reward_version, vector
        self.classes = {"train": dict(bench.train_classes), "test": dict(bench.test_classes)}
        self.task_lists = {"train": list(bench.train_tasks), "test": list(bench.test_tasks)}
        #: per split, per skill (in the split's order): the indices of its tasks in task_lists
        self.class_tasks = {split: [[i for i, t in enumerate(tasks) if t.env_name == name] for name in self.classes[split]]
                            for split, tasks in self.task_lists.items()}
        self.versions = {"metaworld": getattr(mw, "__version__", _dist_version("metaworld")),
                         "mujoco": _dist_version("mujoco"), "reward": reward_version}

    def sample(self, n: int, generator: torch.Generator, split: Split = "train") -> TaskBatch:
        per_class = self.class_tasks[split]
        if n % len(per_class):
            raise ValueError(f"{self.benchmark} {split} has {len(per_class)} skills: the number of tasks ({n}) must "
                             "be a multiple of it")
        index, skill = [], []
        for c, ids in enumerate(per_class):
            pick = torch.randint(len(ids), (n // len(per_class),), generator=generator)
            index += [ids[int(i)] for i in pick]
            skill += [c] * len(pick)
        return {"index": torch.tensor(index), "skill": torch.tensor(skill),
                "test": torch.full((n,), split == "test", dtype=torch.bool)}

    def check_num_tasks(self, n: int, split: Split, key: str) -> None:
        """A clear config error before training: every batch of `split` tasks has the same number per skill."""
        skills = len(self.class_tasks[split])
        if n % skills:
            raise ValueError(f"{key} = {n}: {self.benchmark} {split} has {skills} skills, so its task batches must be a "
                             f"multiple of {skills}")

    def task_objects(self, tasks: TaskBatch) -> tuple[Split, list]:
        split: Split = "test" if bool(tasks["test"][0]) else "train"
        return split, [self.task_lists[split][int(i)] for i in tasks["index"]]


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


class BatchedMetaWorld(BatchedTaskEnv):
    """T tasks x E episodes of Meta-World sub-envs in a Gymnasium vector env (one per split, built on first use).
    Observations and rewards as torch tensors on `device`; actions in [-1, 1]^4 (clipped by Meta-World)."""

    steps_on_own_threads = True  # the physics runs in the sub-envs: torch on one thread while collecting

    def __init__(self, distribution: MetaWorldTasks, num_tasks: int, episodes_per_task: int,
                 horizon: int = MAX_PATH_LENGTH, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        if not 0 < horizon <= MAX_PATH_LENGTH:
            raise ValueError(f"Meta-World episodes last at most {MAX_PATH_LENGTH} steps, got horizon {horizon}")
        self.dist, self.dtype = distribution, dtype
        self._vectors: dict[str, gym.vector.VectorEnv] = {}
        self._layouts: dict[str, torch.Tensor] = {}  # per split: the skill of each sub-env
        self._active: gym.vector.VectorEnv | None = None
        probe = self._make_one(*next(iter(distribution.classes["train"].items())))()
        super().__init__(num_tasks, episodes_per_task, horizon, probe.observation_space, probe.action_space, device)
        probe.close()
        self.episode_success = torch.zeros(self.num_envs, dtype=torch.bool)

    def _make_one(self, name: str, cls, split: str = "train"):
        """A sub-env of skill `name`, holding the first of its tasks until set_tasks."""
        return sub_env_factory(self.dist, cls, next(t for t in self.dist.task_lists[split] if t.env_name == name))

    def _vector(self, split: str, skills: torch.Tensor) -> gym.vector.VectorEnv:
        """The split's vector env, sub-env i running skill skills[i]: built for the first batch's skills (whole
        skills in order in one process, Meta-World's layout; a torch.distributed rank's part of them), which
        every later batch of the split must keep."""
        if split not in self._vectors:
            classes = list(self.dist.classes[split].items())
            make = [self._make_one(*classes[int(s)], split) for s in skills]
            vector = gym.vector.AsyncVectorEnv if self.dist.vector == "async" else gym.vector.SyncVectorEnv
            self._vectors[split] = vector(make, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
            # each reset takes the sub-env's (one) task: no separate sample_tasks call, which resets as well
            self._vectors[split].call("toggle_sample_tasks_on_reset", True)
            self._layouts[split] = skills.clone()
        elif not torch.equal(skills, self._layouts[split]):
            raise ValueError("Meta-World tasks must come in the distribution's skill order (MetaWorldTasks.sample)")
        return self._vectors[split]

    def set_tasks(self, tasks: TaskBatch) -> None:
        split, objects = self.dist.task_objects(tasks)
        vec = self._vector(split, tasks["skill"].repeat_interleave(self.episodes_per_task))
        vec.set_attr("tasks", [[t] for t in objects for _ in range(self.episodes_per_task)])
        self.tasks, self._active = tasks, vec

    def _reset(self, seed: int | None):
        vec = self._active
        try:
            first = self.worlds[0]  # sub-env i of the whole batch gets seed + i, as in one process
            obs, info = vec.reset(seed=None if seed is None else [seed + first + i for i in range(self.num_envs)])
        except Exception as e:
            raise EnvFailure(f"{self.dist.name}: a sub-env failed on reset ({type(e).__name__}: {e})") from e
        self.episode_success = torch.zeros(self.num_envs, dtype=torch.bool)
        return torch.as_tensor(np.asarray(obs), dtype=self.dtype, device=self.device), info

    def _step(self, actions: torch.Tensor):
        try:
            obs, reward, terminated, _, info = self._active.step(actions.detach().cpu().numpy().astype(np.float64))
        except Exception as e:
            raise EnvFailure(f"{self.dist.name}: a sub-env failed at step {self.t} of the rollout "
                             f"({type(e).__name__}: {e})") from e
        if "success" in info:
            self.episode_success |= torch.as_tensor(np.asarray(info["success"]) > 0)
        as_t = lambda x, dt: torch.as_tensor(np.asarray(x), dtype=dt, device=self.device)  # noqa: E731
        truncated = torch.full((self.num_envs,), self.t >= self.horizon, dtype=torch.bool, device=self.device)
        return as_t(obs, self.dtype), as_t(reward, self.dtype), as_t(terminated, torch.bool), truncated, {}

    def close(self, **kwargs: Any) -> None:
        for vec in self._vectors.values():
            vec.close()
        self._vectors.clear()


def sub_env_factory(dist: MetaWorldTasks, cls, task):
    """Meta-World's own sub-env constructor (its wrappers: time limit, success termination off, task selection,
    episode statistics) for env class `cls` holding `task`, with the distribution's reward version."""
    return partial(_import_metaworld()._init_each_env, env_cls=cls, tasks=[task], max_episode_steps=MAX_PATH_LENGTH,
                   terminate_on_success=False, task_select="pseudorandom", reward_function_version=dist.reward_version)


def make_batched(distribution: MetaWorldTasks, num_tasks: int, episodes_per_task: int, horizon: int,
                 device="cpu", dtype: torch.dtype = torch.float32, **kw) -> BatchedMetaWorld:
    return BatchedMetaWorld(distribution, num_tasks, episodes_per_task, horizon, device=device, dtype=dtype)


def ml1_tasks(env_name: str = "reach-v3", reward_version: str = "v2", split_seed: int = 0,
              vector: str = "sync") -> MetaWorldTasks:
    return MetaWorldTasks("ML1", env_name, reward_version, split_seed, vector)


def ml10_tasks(reward_version: str = "v2", split_seed: int = 0, vector: str = "sync") -> MetaWorldTasks:
    return MetaWorldTasks("ML10", "", reward_version, split_seed, vector)


def single_env(task: TaskBatch | None = None, benchmark: str = "ML1", env_name: str = "reach-v3",
               reward_version: str = "v2", split: Split = "train") -> gym.Env:
    """The family's single Gymnasium env (`metarl/MetaWorldML1-v0`): one Meta-World env with one task."""
    dist = MetaWorldTasks(benchmark, env_name or "reach-v3", reward_version)
    tasks = task or dist.sample(len(dist.classes[split]), torch.Generator().manual_seed(0), split)
    split_, objects = dist.task_objects(tasks)
    env = sub_env_factory(dist, dist.classes[split_][objects[0].env_name], objects[0])()
    env.unwrapped.set_task(objects[0])
    return env
