"""The MuJoCo Warp backend against the CPU backend, on Warp's CPU device (the same kernels a GPU runs; CI has no
GPU), for every MuJoCo family: same tasks, start states and actions. What float32 physics can promise against
float64 physics (trajectories part at contacts, where float32 rounding decides a contact a step earlier or later):

    (a) observations and rewards agree to float32 tolerance on every step before a world's active constraints
        (contacts, joint limits) change, in either backend (float32 can reach one a step before float64 does)
    (b) over 64 worlds x 100 steps of the same actions, mean returns agree within 3 standard errors
    (c) terminations fall on the same steps while the states still agree
    (d) randomised dynamics: each world, with its own scaled masses, inertias, damping and friction, matches
        the CPU world with the same scales from the first step
The CUDA-only parts (graph capture, streams, throughput) are marked gpu (run with `pytest -m gpu`)."""
import functools

import numpy as np
import pytest
import torch

mujoco = pytest.importorskip("mujoco")
pytest.importorskip("mujoco_warp")

import envs  # noqa: E402
from envs.mujoco import MUJOCO_TASKS  # noqa: E402
from envs.mujoco.batched import BatchedMujocoEnv  # noqa: E402

FAMILIES = [cls.name for cls in MUJOCO_TASKS]
T, E, H = 8, 8, 100
TOL = 1e-4  # float32 physics against float64


LIMIT = int(mujoco.mjtConstraint.mjCNSTR_LIMIT_JOINT)


def constraints(data) -> frozenset:
    """The active constraints of one CPU world (MjData): geom pairs in contact and joints at their limits."""
    limits = {("limit", int(i)) for t, i in zip(data.efc_type[: data.nefc], data.efc_id[: data.nefc]) if t == LIMIT}
    return frozenset({(int(c.geom1), int(c.geom2)) for c in data.contact[: data.ncon]} | limits)


def warp_constraints(engine) -> list[frozenset]:
    """The active constraints of each Warp world, as constraints() names them."""
    d = engine.d
    n = int(d.nacon.numpy()[0])
    active = [set() for _ in range(engine.nworld)]
    for w, (g1, g2) in zip(d.contact.worldid.numpy()[:n], d.contact.geom.numpy()[:n]):
        active[int(w)].add((int(g1), int(g2)))
    types, ids, nefc = d.efc.type.numpy(), d.efc.id.numpy(), d.nefc.numpy()
    for w in range(engine.nworld):
        active[w] |= {("limit", int(i)) for t, i in zip(types[w, : nefc[w]], ids[w, : nefc[w]]) if t == LIMIT}
    return [frozenset(a) for a in active]


@functools.lru_cache(maxsize=None)
def rollouts(name: str, device: str = "cpu") -> dict:
    """Both backends from the same start states under the same uniform random actions, step by step."""
    dist = envs.make_distribution(name)
    tasks = dist.sample(T, torch.Generator().manual_seed(0))
    cpu = BatchedMujocoEnv(dist, T, E, H, backend="cpu-threads", dtype=torch.float64, num_threads=1)
    warp = BatchedMujocoEnv(dist, T, E, H, backend="warp", device=device, dtype=torch.float64)
    obs_c, _ = cpu.reset(seed=1, options={"tasks": tasks})
    obs_w, _ = warp.reset(options={"tasks": tasks, "init_qpos": cpu.engine.qpos.copy(),
                                   "init_qvel": cpu.engine.qvel.copy()})
    start = list(zip([constraints(d) for d in cpu.engine.datas], warp_constraints(warp.engine)))
    rng = np.random.default_rng(0)
    out = {k: [] for k in ("obs_c", "obs_w", "rew_c", "rew_w", "done_c", "done_w", "constraints")}
    out["obs0"] = (obs_c, obs_w.cpu())
    for _ in range(H):
        a = torch.from_numpy(rng.uniform(-1, 1, (T * E, cpu.nu)).astype(np.float32))
        oc, rc, dc, _, _ = cpu.step(a)
        ow, rw, dw, _, _ = warp.step(a.to(device))
        for k, v in (("obs_c", oc), ("obs_w", ow), ("rew_c", rc), ("rew_w", rw), ("done_c", dc), ("done_w", dw)):
            out[k].append(v.cpu().double() if k != "done_w" and k != "done_c" else v.cpu())
        out["constraints"].append(list(zip([constraints(d) for d in cpu.engine.datas], warp_constraints(warp.engine))))
    for k in ("obs_c", "obs_w", "rew_c", "rew_w", "done_c", "done_w"):
        out[k] = torch.stack(out[k])  # (H, N, ...)
    # per world, the steps before its contact set first changes (in either backend) from the one it started with
    out["unchanged"] = torch.tensor([[all(out["constraints"][s][i] == start[i] for s in range(t + 1)) for i in range(T * E)]
                                     for t in range(H)])
    cpu.close()
    warp.close()
    return out


@pytest.mark.parametrize("name", FAMILIES)
def test_steps_agree_to_float32_tolerance_until_the_active_constraints_change(name):
    r = rollouts(name)
    torch.testing.assert_close(r["obs0"][1].double(), r["obs0"][0].double(), rtol=TOL, atol=TOL)
    mask = r["unchanged"]
    assert mask[0].any(), "no world kept its contacts for one step: nothing compared"
    obs_err = ((r["obs_w"] - r["obs_c"]).abs().amax(-1))[mask]
    rew_err = (r["rew_w"] - r["rew_c"]).abs()[mask]
    assert obs_err.max() <= TOL * (1 + r["obs_c"].abs().amax()), (float(obs_err.max()), int(mask.sum()))
    assert rew_err.max() <= TOL * (1 + r["rew_c"].abs().amax()), float(rew_err.max())


@pytest.mark.parametrize("name", FAMILIES)
def test_mean_returns_over_many_worlds_agree_within_three_standard_errors(name):
    r = rollouts(name)
    ret_c, ret_w = r["rew_c"].sum(0), r["rew_w"].sum(0)  # (N,)
    diff = ret_w - ret_c
    se = float(diff.std() / len(diff) ** 0.5)
    assert abs(float(diff.mean())) <= 3 * se + TOL * (1 + float(ret_c.abs().mean())), (float(ret_c.mean()),
                                                                                        float(ret_w.mean()), se)


@pytest.mark.parametrize("name", FAMILIES)
def test_terminations_fall_on_the_same_steps_while_the_states_agree(name):
    r = rollouts(name)
    agree = (r["obs_w"] - r["obs_c"]).abs().amax(-1) <= 1e-3
    assert torch.equal(r["done_w"][agree], r["done_c"][agree])


@pytest.mark.parametrize("name", [n for n in FAMILIES if "RandParams" in n])
def test_randomised_dynamics_match_world_by_world_from_the_first_step(name):
    """Each world has its own scales (task parameters): the Warp world must use its own masses and the constants
    derived from them (subtree masses, inverse weights), not world 0's."""
    r = rollouts(name)
    first = (r["obs_w"][0] - r["obs_c"][0]).abs().amax(-1)  # per world, after one step
    assert float(first.max()) <= TOL * (1 + float(r["obs_c"][0].abs().amax())), first.max()


def test_rllabs_ant_physics_reach_the_warp_model():
    """model rllab edits the compiled model (timestep, contact impedance, qpos0): the Warp copy has the edits, and
    its first step agrees with the CPU backend's from the same start."""
    dist = envs.make_distribution("AntDir", terms="maml_paper", model="rllab")
    tasks = dist.sample(2, torch.Generator().manual_seed(0))
    cpu = BatchedMujocoEnv(dist, 2, 2, 5, backend="cpu-threads", dtype=torch.float64, num_threads=1)
    warp = BatchedMujocoEnv(dist, 2, 2, 5, backend="warp", device="cpu", dtype=torch.float64)
    m = warp.engine.m
    assert float(m.opt.timestep.numpy().ravel()[0]) == pytest.approx(0.02, rel=1e-6)  # float32
    np.testing.assert_allclose(m.qpos0.numpy().reshape(-1, 15)[0], cpu.init_qpos, atol=1e-7)
    np.testing.assert_allclose(m.geom_solimp.numpy().reshape(-1, 5)[0], [0.8, 0.8, 0.01, 0.5, 2.0], atol=1e-7)
    cpu.reset(seed=1, options={"tasks": tasks})
    warp.reset(options={"tasks": tasks, "init_qpos": cpu.engine.qpos.copy(), "init_qvel": cpu.engine.qvel.copy()})
    a = torch.zeros(4, cpu.nu)
    oc, ow = cpu.step(a)[0], warp.step(a)[0].cpu().double()
    torch.testing.assert_close(ow, oc, rtol=TOL, atol=TOL * (1 + float(oc.abs().max())))


def test_a_maml_trpo_iteration_runs_on_the_warp_backend(tmp_path):
    """One meta-iteration of MAML-TRPO on HalfCheetahVel, rl.backend warp (Warp's CPU device here), through the
    same sampler and trainer as every other run."""
    from metarl.run.config import Config, from_dict
    from metarl.run.trainer import Trainer

    cfg = from_dict(Config, {
        "task": {"name": "HalfCheetahVel", "horizon": 8}, "model": {"hidden": [8, 8]},
        "outer": {"optimizer": "trpo", "hvp": "gauss_newton"}, "learner": {"inner_lr": 0.1},
        "rl": {"episodes_per_task": 2, "backend": "warp"},
        "train": {"iterations": 1, "meta_batch_size": 2, "eval_every": 0},
        "eval": {"num_tasks": 2, "episodes_per_task": 2, "steps": 1}, "device": "cpu",
        "log": {"wandb": "disabled", "progress": False, "console": False}, "run_dir": str(tmp_path / "r")}).validate()
    trainer = Trainer(cfg)
    assert trainer.source.sampler(2, 2).env.backend == "warp"
    metrics = trainer.step()
    assert np.isfinite(metrics["meta_loss"]) and np.isfinite(metrics["return_post"])


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["HalfCheetahVel", "AntGoal", "HopperRandParams"])
def test_the_cuda_graph_step_matches_warps_cpu_device(name):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    gpu, cpu = rollouts(name, "cuda"), rollouts(name)
    for check in ("obs", "rew"):  # float32 on both: the same kernels, compiled for two targets (nvcc contracts to
        # FMAs, other reduction orders), so the difference is relative to the value and grows by ulps per step;
        # a stale or mis-ordered graph replay differs by O(1)
        g, c = gpu[f"{check}_w"], cpu[f"{check}_w"]
        rel = ((g - c).abs() / (1 + c.abs()))[cpu["unchanged"]]
        print(f"{name} {check}: max |gpu - cpu| / (1 + |cpu|) = {rel.max():.2e}")
        assert rel.max() <= TOL
