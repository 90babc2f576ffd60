"""MuJoCo task envs: Gymnasium v5 agreement, check_env, task splits, and batched == single, bit for bit."""
import warnings

import numpy as np
import pytest
import torch

mujoco = pytest.importorskip("mujoco")
pytest.importorskip("imageio")  # gymnasium.envs.mujoco needs it

import gymnasium as gym  # noqa: E402
from gymnasium.utils.env_checker import check_env  # noqa: E402

import envs  # noqa: E402,F401  (registers the env ids)
from envs.base import task_at  # noqa: E402
from envs.mujoco import MUJOCO_TASKS  # noqa: E402

BATCHED_NAMES = {d.name: d for d in MUJOCO_TASKS}
from envs.mujoco.batched import BatchedMujocoEnv  # noqa: E402
from envs.mujoco.cpu_backend import has_batch  # noqa: E402


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dist", MUJOCO_TASKS, ids=lambda d: d.env_id)
def test_check_env(dist):
    env = gym.make(dist.env_id)
    assert env.spec.max_episode_steps == 200
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env.unwrapped, skip_render_check=True)  # no display here


@pytest.mark.parametrize("ours,theirs", [("metarl/HalfCheetahDir-v0", "HalfCheetah-v5"), ("metarl/AntDir-v0", "Ant-v5")])
def test_forward_direction_is_gymnasium_v5(ours, theirs):
    """Direction +1 is exactly Gymnasium's v5 task: same observations, rewards and terminations."""
    mine, ref = gym.make(ours, task={"direction": 1.0}).unwrapped, gym.make(theirs).unwrapped
    o1, _ = mine.reset(seed=3)
    o2, _ = ref.reset(seed=3)
    np.testing.assert_array_equal(o1, o2)
    rng = np.random.default_rng(0)
    for _ in range(30):
        a = rng.uniform(-1, 1, mine.action_space.shape).astype(np.float32)
        s1, s2 = mine.step(a), ref.step(a)
        np.testing.assert_array_equal(s1[0], s2[0])
        assert s1[1] == s2[1] and s1[2] == s2[2]


def test_backward_direction_flips_forward_reward():
    env = gym.make("metarl/HalfCheetahDir-v0", task={"direction": -1.0}).unwrapped
    env.reset(seed=0)
    _, r, _, _, info = env.step(np.full(6, 0.5, dtype=np.float32))
    assert info["forward_reward"] == pytest.approx(-info["x_velocity"])
    assert r == pytest.approx(-info["x_velocity"] - 0.1 * 6 * 0.25)


def test_bad_split_is_explained():
    with pytest.raises(ValueError, match="train, test"):
        BATCHED_NAMES["AntDir"]().sample(2, gen(), "validation")


def test_rand_params_scales():
    scales = BATCHED_NAMES["HopperRandParams"]().sample(200, gen(3))
    for field in ("body_mass", "body_inertia", "dof_damping", "geom_friction"):
        log = torch.log(scales[field]) / np.log(1.5)
        assert log.min() >= -3 - 1e-9 and log.max() <= 3 + 1e-9 and log.std() > 1.0


CPU_BACKENDS = ["cpu", "cpu-threads"]


def run_pair(name, backend, T=2, E=2, H=40, seed=1, **options):
    """Step the batched env and T*E single envs with the same tasks, start states and actions."""
    dist = BATCHED_NAMES[name](**options)
    tasks = dist.sample(T, gen(seed))
    batched = BatchedMujocoEnv(dist, T, E, horizon=H, dtype=torch.float64, backend=backend, num_threads=2)
    singles = [gym.make(dist.env_id, task=task_at(tasks, i // E), **options).unwrapped for i in range(T * E)]
    first = [s.reset(seed=10 + i)[0] for i, s in enumerate(singles)]
    obs, _ = batched.reset(options={"tasks": tasks, "init_qpos": np.stack([s.data.qpos for s in singles]),
                                    "init_qvel": np.stack([s.data.qvel for s in singles])})
    np.testing.assert_array_equal(obs.numpy(), np.stack(first))
    rng, done, terminations = np.random.default_rng(seed), np.zeros(T * E, bool), 0
    for t in range(H):
        a = rng.uniform(-1, 1, (T * E, batched.nu)).astype(np.float32)
        obs, rew, term, trunc, _ = batched.step(torch.from_numpy(a))
        assert bool(trunc.all()) == (t == H - 1)
        for i, s in enumerate(singles):
            if done[i]:  # a finished episode stays put, earns nothing
                assert rew[i] == 0 and term[i]
                continue
            o, r, te, _, _ = s.step(a[i])
            np.testing.assert_array_equal(obs[i].numpy(), o)
            assert float(rew[i]) == r and bool(term[i]) == te
            done[i] = te
            terminations += te
    return batched, terminations


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("name", sorted(BATCHED_NAMES))
def test_batched_equals_single_exactly(name, backend):
    _, terminations = run_pair(name, backend)
    if name in ("HopperRandParams", "Walker2dRandParams"):
        assert terminations > 0  # the masking after termination was exercised


PAPER_FAMILIES = ["HalfCheetahVel", "HalfCheetahDir", "AntVel", "AntDir", "AntGoal"]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("name", PAPER_FAMILIES)
def test_batched_equals_single_exactly_with_the_papers_terms(name, backend):
    run_pair(name, backend, H=25, terms="maml_paper")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_batched_equals_single_exactly_on_rllabs_ant_physics(backend):
    batched, _ = run_pair("AntDir", backend, H=25, terms="maml_paper", model="rllab")
    single = gym.make("metarl/AntDir-v0", terms="maml_paper", model="rllab").unwrapped
    np.testing.assert_array_equal(batched.init_qpos, single.init_qpos)  # rllab's pose is the reset's mean here too
    assert batched.dt == single.dt == 0.02


def world_masses(env):
    if env.backend == "cpu-batch":
        return env.engine.batch.expanded("body_mass")
    return np.stack([m.body_mass for m in env.engine.models])


@pytest.mark.parametrize("backend", ["cpu-batch", "cpu-threads"])
def test_dynamics_randomised_per_world(backend):
    if backend == "cpu-batch" and not has_batch():
        pytest.skip("mujoco.batch needs MuJoCo >= 4.0")
    dist = BATCHED_NAMES["HalfCheetahRandParams"]()
    tasks = dist.sample(2, gen(4))
    env = BatchedMujocoEnv(dist, 2, 2, horizon=5, dtype=torch.float64, backend=backend)
    env.reset(seed=0, options={"tasks": tasks})
    mass, default = world_masses(env), env._default_fields["body_mass"]
    np.testing.assert_array_equal(mass[0], default * tasks["body_mass"][0].numpy())
    np.testing.assert_array_equal(mass[2], default * tasks["body_mass"][1].numpy())
    assert np.array_equal(mass[0], mass[1]) and not np.array_equal(mass[0], mass[2])
    # same start state and actions, different physics: the trajectories part
    obs, _ = env.reset(options={"init_qpos": np.tile(env.init_qpos, (4, 1)), "init_qvel": np.zeros((4, env.nv))})
    for _ in range(5):
        obs, *_ = env.step(torch.full((4, env.nu), 0.5))
    assert torch.equal(obs[0], obs[1]) and not torch.allclose(obs[0], obs[2])


def test_reset_seed_reproduces_and_noise_scale():
    dist = BATCHED_NAMES["HalfCheetahVel"]()
    env = BatchedMujocoEnv(dist, 3, 4, horizon=5, backend="cpu", dtype=torch.float64)
    tasks = dist.sample(3, gen())
    a, _ = env.reset(seed=5, options={"tasks": tasks})
    b, _ = env.reset(seed=5)
    c, _ = env.reset(seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    qpos_noise = env.engine.qpos - env.init_qpos
    assert np.abs(qpos_noise).max() <= 0.1 and np.abs(qpos_noise).max() > 0.05


def test_velocity_offset_adds_to_every_live_steps_reward_and_nothing_else():
    from envs.registry import make_distribution

    def rollout(**options):
        dist = make_distribution("AntVel", **options)
        env = BatchedMujocoEnv(dist, 2, 2, horizon=60, backend="cpu", dtype=torch.float64)
        env.reset(seed=1, options={"tasks": dist.sample(2, gen(2))})
        rng, steps = np.random.default_rng(0), []
        for _ in range(60):
            obs, rew, term, _, _ = env.step(torch.from_numpy(rng.uniform(-1, 1, (4, env.nu))))
            steps.append((obs, rew, term))
        return steps

    plain, offset = rollout(), rollout(velocity_offset=1.0)
    ended = torch.zeros(4, dtype=torch.bool)
    for (o0, r0, t0), (o1, r1, t1) in zip(plain, offset):
        assert torch.equal(o0, o1) and torch.equal(t0, t1)
        torch.testing.assert_close(r1, torch.where(ended, r0, r0 + 1.0), rtol=0, atol=1e-12)
        ended |= t0
    assert bool(ended.any())  # random actions tip the ant over: the masking after termination was exercised
    with pytest.raises(ValueError, match="velocity_offset"):
        make_distribution("AntVel", velocity_offset=float("nan"))


def test_bad_input_is_explained():
    dist = BATCHED_NAMES["AntGoal"]()
    with pytest.raises(ValueError, match="cpu-threads"):
        BatchedMujocoEnv(dist, 1, 1, backend="gpu")
    env = BatchedMujocoEnv(dist, 2, 1, backend="cpu")
    with pytest.raises(KeyError, match="goal"):
        env.set_tasks({"velocity": torch.zeros(2)})
    with pytest.raises(ValueError, match="2 tasks"):
        env.set_tasks({"goal": torch.zeros(3, 2)})


def test_mujoco_warnings_do_not_write_a_log_file_into_the_working_directory(tmp_path, monkeypatch):
    # MuJoCo 4 warns about Gymnasium's v5 assets; its default handler appends that to ./MUJOCO_LOG.TXT
    monkeypatch.chdir(tmp_path)
    env = gym.make("metarl/HalfCheetahVel-v0")
    env.reset(seed=0)
    BatchedMujocoEnv(BATCHED_NAMES["AntDir"](), 1, 1, 5)
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()


@pytest.mark.parametrize("name,terms", [("AntVel", "maml_paper"), ("AntDir", "v5"), ("HalfCheetahVel", "maml_paper"),
                                        ("HalfCheetahDir", "v5")])
def test_reward_terms_sum_to_each_episodes_return_and_stop_when_it_ends(name, terms):
    """The per-term episode sums the trainer logs (forward, control, survive, contact) add up to the return,
    with episodes that terminate mid-way (random actions topple the ant), and stop counting after the end."""
    dist = BATCHED_NAMES[name](terms=terms)
    env = BatchedMujocoEnv(dist, 2, 3, horizon=80, backend="cpu", num_threads=1, seed=0)
    g = gen(1)
    env.reset(seed=0, options={"tasks": dist.sample(2, g)})
    total, ended_at = torch.zeros(6, dtype=torch.float64), None
    for t in range(80):
        _, reward, done, _, _ = env.step(3 * torch.randn(6, env.single_action_space.shape[0], generator=g))
        total += reward.double()
        if done.any() and ended_at is None:
            ended_at = {k: v.clone() for k, v in env.episode_reward_terms.items()}
            first = int(done.nonzero()[0])
    terms_ = env.episode_reward_terms
    assert set(terms_) == ({"forward", "control", "survive", "contact"} if name.startswith("Ant") else {"forward", "control"})
    assert torch.allclose(sum(terms_.values()), total, rtol=1e-5, atol=1e-3)
    assert terms_["control"].max() < 0 and (terms_.get("contact", torch.zeros(1)) <= 0).all()
    if name.startswith("Ant"):
        assert ended_at is not None, "no episode terminated: the test needs one"
        assert all(float(terms_[k][first]) == float(ended_at[k][first]) for k in terms_)
