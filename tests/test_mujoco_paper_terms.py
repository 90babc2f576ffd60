"""task.options.terms maml_paper: each term of the rllab envs the MAML paper's figures came from
(cbfinn/maml_rl, rllab/envs/mujoco/{half_cheetah,ant}_env_rand*.py), checked against its formula on the env's own
MuJoCo state after a step with hand-made actions: the forward term from the torso's centre-of-mass velocity
(MuJoCo's mj_objectVelocity, as rllab's get_body_comvel), the control, contact and survival terms, the
observation's layout, the termination, the reset noise. The batched env gives the same numbers
(tests/test_mujoco_envs.py)."""
import numpy as np
import pytest
import torch

mujoco = pytest.importorskip("mujoco")
pytest.importorskip("imageio")

import gymnasium as gym  # noqa: E402

import envs  # noqa: E402,F401  (registers the env ids)


TASKS = {"HalfCheetahVel": {"velocity": torch.tensor([1.3])}, "HalfCheetahDir": {"direction": torch.tensor([-1.0])},
         "AntVel": {"velocity": torch.tensor([2.1])}, "AntDir": {"direction": torch.tensor([1.0])},
         "AntGoal": {"goal": torch.tensor([[1.5, -2.0]])}}


def torso_com_velocity(env) -> np.ndarray:
    m, d = env.model, env.data
    res = np.zeros(6)
    mujoco.mj_objectVelocity(m, d, mujoco.mjtObj.mjOBJ_BODY, mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "torso"),
                             res, 0)
    return res[3:]  # linear, world frame


def expected_forward(name: str, env, task) -> float:
    v = torso_com_velocity(env)
    com = env.data.subtree_com[1]
    if name.endswith("Vel"):
        return (1.0 if name.startswith("Ant") else 0.0) - abs(v[0] - float(task["velocity"][0]))
    if name.endswith("Dir"):
        return float(task["direction"][0]) * v[0]
    return 4.0 - np.abs(com[:2] - task["goal"][0].numpy()).sum()


CASES = [(name, "v5") for name in sorted(TASKS)] + [(name, "rllab") for name in sorted(TASKS) if name.startswith("Ant")]


@pytest.mark.parametrize("name,model", CASES)
def test_every_term_matches_its_formula_after_a_step(name, model):
    task = TASKS[name]
    env = gym.make(f"metarl/{name}-v0", task=task, terms="maml_paper", model=model).unwrapped
    env.reset(seed=3)
    action = np.linspace(-1.4, 1.4, env.action_space.shape[0]).astype(np.float32)  # some beyond the range
    for _ in range(3):
        obs, reward, terminated, _, _ = env.step(action)
    d = env.data
    forward = expected_forward(name, env, task)
    if name.startswith("HalfCheetah"):
        ctrl = 0.05 * np.square(np.clip(action, -1, 1)).sum()
        expected = forward - ctrl
        layout = [d.qpos[1:], d.qvel, d.subtree_com[1]]
        assert not terminated
    else:
        ctrl = 0.005 * np.square(np.clip(action, -1, 1)).sum()  # rllab's normalize clips; half-range 1 here
        contact = 0.0005 * np.square(np.clip(d.cfrc_ext, -1, 1)).sum()
        expected = forward - ctrl - contact + 0.05
        layout = [d.qpos, d.qvel, np.clip(d.cfrc_ext, -1, 1).ravel(), d.xmat[1], d.subtree_com[1]]
        assert terminated == (not (np.isfinite(d.qpos).all() and np.isfinite(d.qvel).all() and 0.2 <= d.qpos[2] <= 1.0))
    assert reward == pytest.approx(expected, rel=1e-6, abs=1e-6)
    np.testing.assert_allclose(obs, np.concatenate(layout), rtol=0, atol=1e-12)


def test_the_ant_terminates_when_it_falls_and_survival_pays_on_that_step_too():
    env = gym.make("metarl/AntDir-v0", task=TASKS["AntDir"], terms="maml_paper").unwrapped
    env.reset(seed=0)
    qpos = env.data.qpos.copy()
    qpos[2] = 1.4  # the torso above 1.0: unhealthy too, and nothing touches the ground
    env.set_state(qpos, np.zeros(env.model.nv))
    _, reward, terminated, _, _ = env.step(np.zeros(8, dtype=np.float32))
    assert terminated
    d = env.data
    contact = 0.0005 * np.square(np.clip(d.cfrc_ext, -1, 1)).sum()
    assert reward == pytest.approx(expected_forward("AntDir", env, TASKS["AntDir"]) - contact + 0.05, abs=1e-6)


@pytest.mark.parametrize("name", ["HalfCheetahDir", "AntDir"])
def test_reset_noise_is_rllabs_gaussian(name):
    env = gym.make(f"metarl/{name}-v0", task=TASKS[name], terms="maml_paper").unwrapped
    dq, dv = [], []
    for seed in range(400):
        env.reset(seed=seed)
        dq.append(env.data.qpos - env.init_qpos)
        dv.append(env.data.qvel - env.init_qvel)
    dq, dv = np.concatenate(dq), np.concatenate(dv)
    assert dq.std() == pytest.approx(0.01, rel=0.05) and dv.std() == pytest.approx(0.1, rel=0.05)
    assert abs(dq).max() > 0.03  # a Gaussian's tails (v5's uniform noise stops at its bound)


def test_rllab_ant_physics_step_time_contacts_and_pose():
    """model rllab: one RK4 step of 0.02 s per action, rllab's contact impedance on every geom, its initial pose
    (the file's init_qpos: torso at 0.55, ankles flexed) as the reset's mean; v5's geometry and masses."""
    v5 = gym.make("metarl/AntDir-v0", task=TASKS["AntDir"], terms="maml_paper").unwrapped
    env = gym.make("metarl/AntDir-v0", task=TASKS["AntDir"], terms="maml_paper", model="rllab").unwrapped
    assert (env.model.opt.timestep, env.frame_skip, env.dt) == (0.02, 1, 0.02)
    assert env.model.opt.integrator == mujoco.mjtIntegrator.mjINT_RK4
    np.testing.assert_array_equal(env.model.geom_solimp, np.tile([0.8, 0.8, 0.01, 0.5, 2.0], (env.model.ngeom, 1)))
    np.testing.assert_array_equal(env.init_qpos, [0, 0, 0.55, 1, 0, 0, 0, 0, 1, 0, -1, 0, -1, 0, 1])
    np.testing.assert_array_equal(env.model.body_mass, v5.model.body_mass)
    np.testing.assert_array_equal(env.model.actuator_gear, v5.model.actuator_gear)
    env.reset(seed=1)
    assert env.data.qpos[2] == pytest.approx(0.55, abs=0.05)


def test_a_random_policy_keeps_rllabs_ant_alive_and_topples_v5s():
    """Why the option exists: under the initial policy's std-1 actions v5's ant (5 x 0.01 s per action) jumps out
    of the healthy range within about 50 steps; with rllab's physics it walks the whole 200-step episode (mostly)."""
    lengths = {}
    for model in ("v5", "rllab"):
        env = gym.make("metarl/AntVel-v0", task=TASKS["AntVel"], terms="maml_paper", model=model).unwrapped
        rng, steps = np.random.default_rng(0), []
        for episode in range(6):
            env.reset(seed=episode)
            for t in range(200):
                if env.step(rng.standard_normal(8).astype(np.float32))[2]:
                    break
            steps.append(t + 1)
        lengths[model] = np.mean(steps)
    assert lengths["v5"] < 100 < 180 < lengths["rllab"], lengths


def test_paper_terms_are_an_option_of_the_families_that_have_them():
    from metarl.core.errors import ConfigError
    from metarl.run.config import Config, from_dict

    from_dict(Config, {"task": {"name": "AntVel", "options": {"terms": "maml_paper"}}}).validate()
    for options, message in [({"terms": "rllab"}, "terms must be one of v5, maml_paper"),
                             ({"terms": "maml_paper", "velocity_offset": 1.0}, "velocity_offset is an option of the v5"),
                             ({"model": "rllab"}, "model 'rllab' with terms 'v5' is not defined for ant"),
                             ({"terms": "maml_paper", "model": "mjx"}, "model must be one of v5, rllab")]:
        with pytest.raises((ConfigError, ValueError), match=message):
            envs.make_distribution("AntVel", **options)
    with pytest.raises(ConfigError, match="task.options.terms is not an option of HopperRandParams"):
        from_dict(Config, {"task": {"name": "HopperRandParams", "options": {"terms": "maml_paper"}}}).validate()
    from_dict(Config, {"task": {"name": "AntDir", "options": {"terms": "maml_paper", "model": "rllab"}}}).validate()
    with pytest.raises(ValueError, match="model 'rllab' with terms 'maml_paper' is not defined for half_cheetah"):
        envs.make_distribution("HalfCheetahDir", terms="maml_paper", model="rllab")
