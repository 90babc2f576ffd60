"""Closed-loop MuJoCo rollout speed: the batched env + sampler beside Gymnasium's SyncVectorEnv and the raw
threaded mj_step ceiling, on the same work.

  python scripts/bench_mujoco_rollout.py --env HalfCheetahVel --tasks 40 --episodes 20 --horizon 200

Measures, in one run:
  ours       BatchedSampler.collect: T x E x H steps, one vmapped Gaussian-MLP (2 x 100) call per step, the
             batched env on the chosen backend;
  sync       gymnasium.vector.SyncVectorEnv over T x E single envs (metarl/<env>-v0) with the same policy
             (one batched torch call per step), for --sync-steps steps (its rate does not depend on H);
  ceiling    the physics alone: the batched env's engine stepping the same worlds open loop (frame_skip
             mj_steps per env step, actions ~ N(0, 1) like the initial policy's), no observations, rewards
             or policy.
GPU (MuJoCo Warp, not run here yet):  --backend warp --device cuda --tasks 64 --episodes 128 --sync-steps 0
The last line is one JSON object: env_steps_per_s, speedup_vs_sync_vector_env, fraction_of_ceiling, ...
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", default="HalfCheetahVel", help="a MuJoCo task family (envs.registry), e.g. AntDir")
    p.add_argument("--tasks", type=int, default=40)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--horizon", type=int, default=200)
    p.add_argument("--backend", default="cpu", help="auto, cpu, cpu-batch, cpu-threads, warp (GPU: add --device cuda)")
    p.add_argument("--device", default="cpu", help="torch device of the env tensors and the policy")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the physics (default: all cores)")
    p.add_argument("--repeats", type=int, default=3, help="timed collections of ours (after one warm-up)")
    p.add_argument("--sync-steps", type=int, default=40, help="steps of the SyncVectorEnv baseline (0: skip)")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="torch intra-op threads for policy inference (1: the cores stay with the physics)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def bench_ours(args, names) -> tuple[float, object]:
    from envs.mujoco.batched import BatchedMujocoEnv
    from metarl.core.params import expand
    from metarl.nets.policies import GaussianMLPPolicy
    from metarl.rl.sampler import BatchedSampler

    dist = names[args.env]()
    env = BatchedMujocoEnv(dist, args.tasks, args.episodes, args.horizon, backend=args.backend,
                           device=args.device, num_threads=args.threads, seed=args.seed)
    policy = GaussianMLPPolicy(env.single_observation_space.shape[0], env.single_action_space.shape[0],
                               generator=torch.Generator().manual_seed(args.seed)).to(env.device)
    sampler = BatchedSampler(env, policy)
    params = expand(dict(policy.named_parameters()), args.tasks)
    tasks = dist.sample(args.tasks, torch.Generator().manual_seed(args.seed))
    gen = torch.Generator(device=env.device).manual_seed(args.seed)  # the sampler draws actions on env.device
    sampler.collect(params, tasks, gen)  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ro = sampler.collect(params, tasks, gen)
        if env.device.type == "cuda":
            torch.cuda.synchronize(env.device)
        times.append(time.perf_counter() - t0)
    steps = args.tasks * args.episodes * args.horizon
    print(f"ours ({env.backend}, engine {type(env.engine).__name__}): {steps} env-steps in "
          f"{', '.join(f'{t:.2f}' for t in times)} s; mean return {ro.episode_returns.mean():.1f}")
    return steps / float(np.median(times)), env


def bench_sync(args, names, steps: int) -> float:
    import gymnasium as gym

    from metarl.nets.policies import GaussianMLPPolicy

    dist = names[args.env]()
    tasks = dist.sample(args.tasks, torch.Generator().manual_seed(args.seed))
    n = args.tasks * args.episodes
    fns = [lambda i=i: gym.make(dist.env_id, task={k: v[i // args.episodes] for k, v in tasks.items()})
           for i in range(n)]
    venv = gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    policy = GaussianMLPPolicy(venv.single_observation_space.shape[0], venv.single_action_space.shape[0])
    gen = torch.Generator().manual_seed(args.seed)
    obs, _ = venv.reset(seed=args.seed)
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(steps):
            mean, log_std = policy(torch.as_tensor(obs, dtype=torch.float32))
            a = mean + log_std.exp() * torch.randn(mean.shape, generator=gen)
            obs, *_ = venv.step(a.numpy())
    dt = time.perf_counter() - t0
    venv.close()
    print(f"SyncVectorEnv: {n} envs x {steps} steps in {dt:.2f} s")
    return n * steps / dt


def bench_ceiling(env, args) -> float:
    from envs.mujoco.ceiling import raw_step_rate

    rate = raw_step_rate(env, args.horizon, args.seed)
    print(f"ceiling ({type(env.engine).__name__}, open loop): {rate:,.0f} env-steps/s")
    return rate


def main() -> None:
    args = parse()
    torch.set_num_threads(args.torch_threads)
    from envs.mujoco import MUJOCO_TASKS

    names = {d.name: d for d in MUJOCO_TASKS}
    if args.env not in names:
        raise SystemExit(f"error: unknown --env {args.env!r}; choose from {', '.join(sorted(names))}")
    import mujoco

    ours, env = bench_ours(args, names)
    ceiling = bench_ceiling(env, args)
    sync = bench_sync(args, names, args.sync_steps) if args.sync_steps > 0 else float("nan")
    result = {
        "env": args.env, "tasks": args.tasks, "episodes": args.episodes, "horizon": args.horizon,
        "backend": env.backend, "engine": type(env.engine).__name__, "mujoco": mujoco.__version__,
        "threads": args.threads or len(os.sched_getaffinity(0)), "cpu": platform.processor() or platform.machine(),
        "device": torch.cuda.get_device_name(env.device) if env.device.type == "cuda" else "cpu",
        "env_steps_per_s": round(ours), "sync_vector_env_steps_per_s": round(sync) if sync == sync else None,
        "ceiling_steps_per_s": round(ceiling),
        "speedup_vs_sync_vector_env": round(ours / sync, 2) if sync == sync else None,
        "fraction_of_ceiling": round(ours / ceiling, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
