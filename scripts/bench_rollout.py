#!/usr/bin/env python
"""Rollout throughput: the batched torch env + one batched policy call per step, against Gymnasium's
SyncVectorEnv over the single env with the same policy inference, on the same work (tasks x episodes x H).

    python scripts/bench_rollout.py --env Navigation2D [--tasks 40 --episodes 20 --repeats 5 --threads 2]

Both sides: the default Gaussian MLP policy (2 x 100 ReLU) with the same parameters for every task, actions
sampled from explicit generators, H steps from reset. The last output line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import envs  # noqa: E402,F401  (registers the single env ids)
from envs.batched_registry import batched_env_spec, known_batched_envs, make_batched_env  # noqa: E402
from metarl.models import parameters_of  # noqa: E402
from metarl.rl.policy import GaussianMLPPolicy  # noqa: E402
from metarl.rl.sampler import BatchedSampler  # noqa: E402

# name -> (batched env name in envs.batched_registry, single env id, horizon); other families add a row
BENCH_ENVS: dict[str, tuple[str, str, int]] = {
    "Navigation2D": ("Navigation2D", "metarl/Navigation2D-v0", 100),
    "HalfCheetahVel": ("HalfCheetahVel", "metarl/HalfCheetahVel-v0", 200),
}


def bench_batched(name, tasks, T, E, H, policy, params, repeats, compile_step) -> tuple[float, int]:
    env = make_batched_env(name, T, E, H)
    sampler = BatchedSampler(env, policy, compile=compile_step)
    gen = torch.Generator().manual_seed(0)
    sampler.collect(params, tasks, gen)  # warm-up (and compilation)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = sampler.collect(params, tasks, gen)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), r.obs.shape[0] * r.obs.shape[1] * r.obs.shape[2]


def bench_batched_env_only(name, tasks, T, E, H, repeats) -> float:
    """The env alone, with pre-drawn random actions: what the batched env costs without the policy."""
    env = make_batched_env(name, T, E, H)
    actions = 0.1 * torch.randn(H, T * E, env.single_action_space.shape[0], generator=torch.Generator().manual_seed(0))
    times = []
    for _ in range(repeats + 1):
        env.reset(options={"tasks": tasks})
        t0 = time.perf_counter()
        for t in range(H):
            env.step(actions[t])
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def bench_sync_env_only(single_id, tasks, T, E, H) -> float:
    task_list = [{k: v[i // E] for k, v in tasks.items()} for i in range(T * E)]
    venv = gym.vector.SyncVectorEnv([lambda task=task: gym.make(single_id, task=task) for task in task_list])
    venv.reset(seed=0)
    actions = 0.1 * np.random.default_rng(0).standard_normal((H, T * E, venv.single_action_space.shape[0])).astype(np.float32)
    t0 = time.perf_counter()
    for t in range(H):
        venv.step(actions[t])
    dt = time.perf_counter() - t0
    venv.close()
    return dt


def bench_sync_vector_env(single_id, tasks, T, E, H, policy, params) -> tuple[float, int]:
    task_list = [{k: v[i // E] for k, v in tasks.items()} for i in range(T * E)]
    venv = gym.vector.SyncVectorEnv([lambda task=task: gym.make(single_id, task=task) for task in task_list])
    gen = torch.Generator().manual_seed(0)
    obs, _ = venv.reset(seed=0)
    steps = 0
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(H):
            mean, log_std = torch.func.functional_call(policy, params, (torch.as_tensor(obs, dtype=torch.float32),))
            action = mean + torch.exp(log_std) * torch.randn(mean.shape, generator=gen)
            obs, _, _, _, _ = venv.step(action.numpy())
            steps += T * E
    dt = time.perf_counter() - t0
    venv.close()
    return dt, steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="Navigation2D", help=f"one of {', '.join(BENCH_ENVS)}")
    p.add_argument("--tasks", type=int, default=40)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--horizon", type=int, default=0, help="0 = the env's default")
    p.add_argument("--repeats", type=int, default=5, help="timed batched collections (median reported)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads; 0 = torch's default")
    p.add_argument("--compile", action="store_true", help="also time a torch.compile'd policy step")
    a = p.parse_args()
    if a.env not in BENCH_ENVS:
        raise SystemExit(f"error: unknown --env {a.env!r}; known: {', '.join(BENCH_ENVS)}")
    if a.threads:
        torch.set_num_threads(a.threads)
    batched_name, single_id, horizon = BENCH_ENVS[a.env]
    H = a.horizon or horizon
    T, E = a.tasks, a.episodes
    spec = batched_env_spec(batched_name)
    tasks = envs.make_task_distribution(spec.task_distribution).sample(T, torch.Generator().manual_seed(0))
    probe = make_batched_env(batched_name, 1, 1, H)
    policy = GaussianMLPPolicy(probe.single_observation_space.shape[0], probe.single_action_space.shape[0],
                               generator=torch.Generator().manual_seed(0))
    params = parameters_of(policy)

    eager_s, n = bench_batched(batched_name, tasks, T, E, H, policy, params, a.repeats, False)
    print(f"batched eager:    {n} env steps in {eager_s * 1e3:.1f} ms -> {n / eager_s:,.0f} steps/s", flush=True)
    best_s = eager_s
    if a.compile:
        comp_s, _ = bench_batched(batched_name, tasks, T, E, H, policy, params, a.repeats, True)
        print(f"batched compiled: {n} env steps in {comp_s * 1e3:.1f} ms -> {n / comp_s:,.0f} steps/s", flush=True)
        best_s = min(eager_s, comp_s)
    sync_s, n_sync = bench_sync_vector_env(single_id, tasks, T, E, H, policy, params)
    print(f"SyncVectorEnv:    {n_sync} env steps in {sync_s * 1e3:.1f} ms -> {n_sync / sync_s:,.0f} steps/s", flush=True)
    # a second batched measurement after the slow baseline: on a shared machine the load drifts
    again_s, _ = bench_batched(batched_name, tasks, T, E, H, policy, params, a.repeats, False)
    print(f"batched eager (again): {n / again_s:,.0f} steps/s", flush=True)
    best_s = min(best_s, again_s)
    env_only_s = bench_batched_env_only(batched_name, tasks, T, E, H, a.repeats)
    sync_env_only_s = bench_sync_env_only(single_id, tasks, T, E, H)
    print(f"env only (random actions, no policy): batched {n / env_only_s:,.0f} steps/s, "
          f"SyncVectorEnv {n / sync_env_only_s:,.0f} steps/s", flush=True)
    out = {
        "env": a.env, "tasks": T, "episodes_per_task": E, "horizon": H, "threads": torch.get_num_threads(),
        "env_steps_per_s": round(n / best_s),
        "eager_env_steps_per_s": round(n / min(eager_s, again_s)),
        "sync_vector_env_steps_per_s": round(n_sync / sync_s),
        "speedup_vs_sync_vector_env": round((n / best_s) / (n_sync / sync_s), 2),
        "env_only_steps_per_s": round(n / env_only_s),
        "sync_env_only_steps_per_s": round(n / sync_env_only_s),
        "env_only_speedup": round(sync_env_only_s / env_only_s, 2),
    }
    ceiling_env = make_batched_env(batched_name, T, E, H)
    if hasattr(ceiling_env, "engine"):  # MuJoCo envs: the raw threaded mj_step rate, open loop, same worlds
        from envs.mujoco.ceiling import raw_step_rate

        ceiling = raw_step_rate(ceiling_env, H)
        print(f"raw threaded mj_step ceiling: {ceiling:,.0f} steps/s", flush=True)
        out.update(ceiling_steps_per_s=round(ceiling), fraction_of_ceiling=round((n / best_s) / ceiling, 3))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
