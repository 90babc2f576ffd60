#!/usr/bin/env python
"""Rollout throughput: the batched env + one batched policy call per step (metarl's BatchedSampler), against
Gymnasium's SyncVectorEnv over the single env with the same policy inference, on the same work (tasks x
episodes x H).

    python scripts/bench_rollout.py --env Navigation2D [--tasks 40 --episodes 20 --rounds 3 --threads 2]

Both sides: the default Gaussian MLP policy (2 x 100 ReLU) with the same parameters for every task, actions
sampled from explicit generators, H steps from reset. The contenders are timed in interleaved rounds (each
round: the sampler compiled and eager, `--repeats` collections each, then one SyncVectorEnv collection), so a
drifting machine load hits all of them alike; the speed-up is the median of the per-round ratios.
The last output line is one JSON object.
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

import envs  # noqa: E402  (registers the task families and their single env ids)
from envs import make_batched_env  # noqa: E402
from metarl.nets import parameters_of  # noqa: E402
from metarl.nets.policies import GaussianMLPPolicy  # noqa: E402
from metarl.rl.sampler import BatchedSampler  # noqa: E402

#: the families benchmarked so far (any RL family of envs.registry works)
BENCH_ENVS = ("Navigation2D", "HalfCheetahVel")


def batched_timer(name, tasks, T, E, H, policy, params, compile_step):
    """A function timing one batched collection (seconds), after a warm-up (and compilation)."""
    sampler = BatchedSampler(make_batched_env(name, T, E, H), policy, compile=compile_step)
    gen = torch.Generator().manual_seed(0)
    sampler.collect(params, tasks, gen)

    def once() -> float:
        t0 = time.perf_counter()
        sampler.collect(params, tasks, gen)
        return time.perf_counter() - t0

    return once


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


def sync_vector_env_timer(single_id, tasks, T, E, H, policy, params):
    """A function timing one SyncVectorEnv collection with the same policy inference (seconds)."""
    task_list = [{k: v[i // E] for k, v in tasks.items()} for i in range(T * E)]
    venv = gym.vector.SyncVectorEnv([lambda task=task: gym.make(single_id, task=task) for task in task_list])
    gen = torch.Generator().manual_seed(0)

    def once() -> float:
        obs, _ = venv.reset(seed=0)
        t0 = time.perf_counter()
        with torch.no_grad():
            for _ in range(H):
                mean, log_std = torch.func.functional_call(policy, params, (torch.as_tensor(obs, dtype=torch.float32),))
                action = mean + torch.exp(log_std) * torch.randn(mean.shape, generator=gen)
                obs, _, _, _, _ = venv.step(action.numpy())
        return time.perf_counter() - t0

    return once


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="Navigation2D", help=f"one of {', '.join(BENCH_ENVS)}")
    p.add_argument("--tasks", type=int, default=40)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--horizon", type=int, default=0, help="0 = the env's default")
    p.add_argument("--repeats", type=int, default=5, help="batched collections per round (median taken)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median ratio reported)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads; 0 = torch's default")
    p.add_argument("--no-compile", action="store_true", help="time the eager sampler only")
    a = p.parse_args()
    try:
        fam = envs.family(a.env)
    except KeyError as e:
        raise SystemExit(f"error: {e.args[0]}") from None
    if not fam.is_rl:
        raise SystemExit(f"error: {fam.name} is a supervised family: nothing to roll out")
    if a.threads:
        torch.set_num_threads(a.threads)
    batched_name, single_id = fam.name, fam.env_id
    H = a.horizon or fam.horizon
    T, E = a.tasks, a.episodes
    n = T * E * H
    tasks = fam.distribution().sample(T, torch.Generator().manual_seed(0))
    probe = make_batched_env(batched_name, 1, 1, H)
    policy = GaussianMLPPolicy(probe.single_observation_space.shape[0], probe.single_action_space.shape[0],
                               generator=torch.Generator().manual_seed(0))
    params = parameters_of(policy)

    timers = {"batched_eager": batched_timer(batched_name, tasks, T, E, H, policy, params, False)}
    if not a.no_compile:
        t0 = time.perf_counter()
        timers["batched_compiled"] = batched_timer(batched_name, tasks, T, E, H, policy, params, True)
        print(f"compiled the sampler step in {time.perf_counter() - t0:.1f} s", flush=True)
    sync = sync_vector_env_timer(single_id, tasks, T, E, H, policy, params)
    times: dict[str, list[float]] = {k: [] for k in (*timers, "sync_vector_env")}
    ratios = []
    for r in range(a.rounds):
        for k, once in timers.items():
            times[k].append(statistics.median(once() for _ in range(a.repeats)))
        times["sync_vector_env"].append(sync())
        best = min(times[k][-1] for k in timers)
        ratios.append(times["sync_vector_env"][-1] / best)
        print(f"round {r + 1}: " + ", ".join(f"{k} {n / v[-1]:,.0f}" for k, v in times.items())
              + f" env steps/s; ratio {ratios[-1]:.1f}", flush=True)
    rate = {k: n / statistics.median(v) for k, v in times.items()}
    best_name = max(timers, key=lambda k: rate[k])
    env_only_s = bench_batched_env_only(batched_name, tasks, T, E, H, a.repeats)
    sync_env_only_s = bench_sync_env_only(single_id, tasks, T, E, H)
    print(f"env only (random actions, no policy): batched {n / env_only_s:,.0f} steps/s, "
          f"SyncVectorEnv {n / sync_env_only_s:,.0f} steps/s", flush=True)
    out = {
        "env": a.env, "tasks": T, "episodes_per_task": E, "horizon": H, "threads": torch.get_num_threads(),
        "sampler": best_name,
        "env_steps_per_s": round(rate[best_name]),
        "eager_env_steps_per_s": round(rate["batched_eager"]),
        "sync_vector_env_steps_per_s": round(rate["sync_vector_env"]),
        "speedup_vs_sync_vector_env": round(statistics.median(ratios), 2),
        "env_only_steps_per_s": round(n / env_only_s),
        "sync_env_only_steps_per_s": round(n / sync_env_only_s),
        "env_only_speedup": round(sync_env_only_s / env_only_s, 2),
    }
    if "batched_compiled" in rate:
        out["compiled_env_steps_per_s"] = round(rate["batched_compiled"])
    ceiling_env = make_batched_env(batched_name, T, E, H)
    if hasattr(ceiling_env, "engine"):  # MuJoCo envs: the raw threaded mj_step rate, open loop, same worlds
        from envs.mujoco.ceiling import raw_step_rate

        ceiling = raw_step_rate(ceiling_env, H)
        print(f"raw threaded mj_step ceiling: {ceiling:,.0f} steps/s", flush=True)
        out.update(ceiling_steps_per_s=round(ceiling), fraction_of_ceiling=round(rate[best_name] / ceiling, 3))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
