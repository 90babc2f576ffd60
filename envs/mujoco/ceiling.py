"""The raw physics rate of a batched MuJoCo env: its engine stepping all worlds open loop (frame_skip mj_steps
per env step, actions ~ N(0, 1) as the initial policy's), without observations, rewards or a policy. The
ceiling that rollout benchmarks compare the closed loop against."""
from __future__ import annotations

import time

import numpy as np
import torch


def raw_step_rate(env, steps: int, seed: int = 0) -> float:
    """Env steps per second of `env.engine` alone over `steps` steps of all `env.num_envs` worlds."""
    engine, n = env.engine, env.num_envs
    rng = np.random.default_rng(seed)
    ctrl = rng.standard_normal((steps + 1, n, env.nu))
    qpos = np.tile(env.init_qpos, (n, 1)) + rng.uniform(-0.1, 0.1, (n, env.nq))
    qvel = np.zeros((n, env.nv))
    on_gpu = env.backend == "warp"
    if on_gpu:  # the warp engine takes torch tensors on its device
        ctrl, qpos, qvel = (torch.as_tensor(x, dtype=torch.float32, device=env.device) for x in (ctrl, qpos, qvel))
    engine.reset(qpos, qvel)
    engine.step(ctrl[0])  # warm-up (graph capture on the GPU)
    t0 = time.perf_counter()
    for t in range(1, steps + 1):
        engine.step(ctrl[t])
    if on_gpu:
        torch.cuda.synchronize(env.device)
    return n * steps / (time.perf_counter() - t0)
