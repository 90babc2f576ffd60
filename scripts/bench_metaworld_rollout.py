#!/usr/bin/env python
"""Meta-World rollout throughput (needs the metaworld extra): metarl's sampler over T x E Meta-World sub-envs
with the policy in the loop, against the raw single-thread speed of one Meta-World env (Meta-World's own
sub-env constructor, pre-drawn random actions, no policy, a reset every H steps as in the sampler) times the
cores the vector env can use (sync: 1; async: one worker process per sub-env, at most the machine's cores).

    python scripts/bench_metaworld_rollout.py [--env-name reach-v3 --tasks 10 --episodes 2 --horizon 150 --vector sync]

The two are timed in interleaved rounds (median per round), so a drifting machine load hits both alike.
The last output line is one JSON object; fraction_of_raw_x_cores is the issue's figure (goal: >= 0.8).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def raw_steps_per_s(dist, horizon: int, episodes: int, seed: int = 0) -> float:
    """One Meta-World env stepped by hand: env steps per second, resets included."""
    from envs.meta_world import sub_env_factory

    name, cls = next(iter(dist.classes["train"].items()))
    env = sub_env_factory(dist, cls, next(t for t in dist.task_lists["train"] if t.env_name == name))()
    actions = np.random.default_rng(seed).uniform(-1, 1, (horizon, env.action_space.shape[0]))
    env.get_wrapper_attr("sample_tasks")()  # the sub-env takes its one task, as the vector env's do
    env.reset(seed=seed)
    t0 = time.perf_counter()
    for _ in range(episodes):
        env.reset()
        for t in range(horizon):
            env.step(actions[t])
    seconds = time.perf_counter() - t0
    env.close()
    return episodes * horizon / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env-name", default="reach-v3", help="an ML1 skill")
    p.add_argument("--tasks", type=int, default=10)
    p.add_argument("--episodes", type=int, default=2, help="episodes per task per collection")
    p.add_argument("--horizon", type=int, default=150)
    p.add_argument("--vector", choices=("sync", "async"), default="sync")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    try:
        from envs import make_batched_env
        from envs.meta_world import MetaWorldTasks
    except ImportError as e:
        raise SystemExit(f"error: {e}")
    from metarl.nets import parameters_of
    from metarl.nets.policies import GaussianMLPPolicy
    from metarl.rl.sampler import BatchedSampler

    torch.set_num_threads(1)  # the physics is the work; the policy call is one small batched matmul per step
    try:
        dist = MetaWorldTasks("ML1", a.env_name, vector=a.vector)
    except (ImportError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    T, E, H = a.tasks, a.episodes, a.horizon
    env = make_batched_env("MetaWorldML1", T, E, H, distribution=dist)
    policy = GaussianMLPPolicy(env.single_observation_space.shape[0], env.single_action_space.shape[0],
                               generator=torch.Generator().manual_seed(0))
    params = parameters_of(policy)
    sampler = BatchedSampler(env, policy)
    tasks = dist.sample(T, torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    sampler.collect(params, tasks, gen)  # builds the sub-envs (and, async, their worker processes)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores_used = 1 if a.vector == "sync" else min(T * E, cores)
    ours, raw = [], []
    for r in range(a.rounds):
        t0 = time.perf_counter()
        sampler.collect(params, tasks, gen)
        ours.append(T * E * H / (time.perf_counter() - t0))
        raw.append(raw_steps_per_s(dist, H, max(2, T * E // (4 * cores_used)), seed=r))
        print(f"round {r + 1}: sampler {ours[-1]:,.0f} env steps/s; raw single env {raw[-1]:,.0f} steps/s "
              f"x {cores_used} core(s)", flush=True)
    env.close()
    rate, single = statistics.median(ours), statistics.median(raw)
    print(json.dumps({"env_name": a.env_name, "tasks": T, "episodes_per_task": E, "horizon": H, "vector": a.vector,
                      "cores_used": cores_used, "sampler_env_steps_per_s": round(rate),
                      "raw_single_env_steps_per_s": round(single),
                      "fraction_of_raw_x_cores": round(rate / (single * cores_used), 3)}))


if __name__ == "__main__":
    main()
