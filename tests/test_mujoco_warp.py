"""MuJoCo Warp backend (GPU) against the CPU backend: same tasks, start states and actions, float32 tolerance.

Marked gpu: skipped by default and wherever CUDA or mujoco_warp is missing (run with `pytest -m gpu`).
"""
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.gpu

pytest.importorskip("mujoco")
pytest.importorskip("mujoco_warp")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device", allow_module_level=True)

import envs  # noqa: E402
from envs.mujoco.batched import BatchedMujocoEnv  # noqa: E402


@pytest.mark.parametrize("name", ["HalfCheetahVel", "AntGoal", "HopperRandParams"])
def test_warp_matches_cpu(name):
    T, E, H = 3, 2, 10
    dist = envs.make_distribution(name)
    tasks = dist.sample(T, torch.Generator().manual_seed(0))
    cpu = BatchedMujocoEnv(dist, T, E, H, backend="cpu", dtype=torch.float64)
    gpu = BatchedMujocoEnv(dist, T, E, H, backend="warp", device="cuda", dtype=torch.float64)
    o_cpu, _ = cpu.reset(seed=1, options={"tasks": tasks})
    init = {"init_qpos": cpu.engine.qpos.copy(), "init_qvel": cpu.engine.qvel.copy()}
    o_gpu, _ = gpu.reset(options={"tasks": tasks, **init})
    np.testing.assert_allclose(o_gpu.cpu().numpy(), o_cpu.numpy(), rtol=1e-4, atol=1e-4)
    rng = np.random.default_rng(0)
    for _ in range(H):
        a = torch.from_numpy(rng.uniform(-1, 1, (T * E, cpu.nu)).astype(np.float32))
        oc, rc, tc, _, _ = cpu.step(a)
        og, rg, tg, _, _ = gpu.step(a.cuda())
        # contacts amplify float32 rounding over steps: a loose but meaningful tolerance over 10 steps
        np.testing.assert_allclose(og.cpu().numpy(), oc.numpy(), rtol=1e-2, atol=1e-2)
        np.testing.assert_allclose(rg.cpu().numpy(), rc.numpy(), rtol=1e-2, atol=1e-2)
        assert torch.equal(tg.cpu(), tc)
