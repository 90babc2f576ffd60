"""Meta-World task families (the optional extra: pip install -e .[metaworld]): task parameters from Meta-World's
own train/test split, sub-envs given their tasks, success flags, a failing sub-env stopping training with its
checkpoint kept, MAML-TRPO / RL² training through the one trainer, and Meta-World's own evaluation of a checkpoint
(30-step episodes). Every test here but the first skips without Meta-World; CI's default install has none: they
run where the extra is installed (`pip install -e .[metaworld]`)."""
import importlib.util

import pytest
import torch

import envs
from envs.base import EnvFailure

HAS_METAWORLD = importlib.util.find_spec("metaworld") is not None
needs_metaworld = pytest.mark.skipif(not HAS_METAWORLD, reason="Meta-World is not installed (pip install -e .[metaworld])")


def test_a_failing_env_stops_training_with_its_checkpoint_kept(tmp_path, monkeypatch):
    """Any family: an env that raises mid-rollout (as a vector env's worker does) ends the run with one message
    that names the iteration and the checkpoint that survived, which resumes."""
    from envs.navigation import BatchedNavigation2D
    from metarl.run.config import Config, from_dict
    from metarl.core.errors import RolloutError
    from metarl.run.trainer import Trainer

    def cfg(**train):
        return from_dict(Config, {
            "task": {"name": "Navigation2D", "horizon": 5}, "model": {"hidden": [8]},
            "outer": {"optimizer": "ppo"}, "rl": {"episodes_per_task": 2},
            "train": {"iterations": 3, "meta_batch_size": 2, "eval_every": 0, "checkpoint_every": 1, **train},
            "eval": {"num_tasks": 2, "episodes_per_task": 2, "steps": 1},
            "log": {"wandb": "disabled", "progress": False, "console": False}, "device": "cpu",
            "run_dir": str(tmp_path / "run")}).validate()

    calls = {"n": 0}
    transition = BatchedNavigation2D.transition

    def failing(state, actions):
        calls["n"] += 1
        if calls["n"] > 2 * 5:  # in the 2nd iteration's rollouts (2 collections of 5 steps per iteration)
            raise EnvFailure("Navigation2D: a sub-env failed at step 1 of the rollout (RuntimeError: worker died)")
        return transition(state, actions)

    monkeypatch.setattr(BatchedNavigation2D, "transition", staticmethod(failing))
    with pytest.raises(RolloutError, match=r"environment failure at iteration 2: .*worker died\); the last checkpoint "
                                           r"is kept at .*checkpoint.pt \(continue with --resume\)"):
        Trainer(cfg()).run()
    monkeypatch.setattr(BatchedNavigation2D, "transition", staticmethod(transition))
    resumed = cfg()
    resumed.resume = True
    assert Trainer(resumed).run()["iterations"] == 3


@needs_metaworld
def test_tasks_come_from_metaworlds_own_split_and_reach_their_sub_envs():
    fam = envs.family("MetaWorldML1")
    dist = fam.distribution(env_name="reach-v3")
    assert dist.versions["metaworld"] == "3.1.1" and dist.versions["reward"] == "v2"
    train = dist.sample(3, torch.Generator().manual_seed(0), "train")
    test = dist.sample(3, torch.Generator().manual_seed(0), "test")
    assert not bool(train["test"].any()) and bool(test["test"].all())
    goal = lambda tasks, i: dist.task_objects(tasks)[1][i].data  # noqa: E731
    assert goal(train, 0) != goal(test, 0)  # different goal lists for the two splits
    env = fam.batched_env(dist, 3, 2, 20)
    obs, _ = env.reset(seed=1, options={"tasks": test})
    assert obs.shape == (6, 39) and env.single_action_space.shape == (4,)
    targets = [sub.unwrapped._target_pos for sub in env._active.envs]
    assert (targets[0] == targets[1]).all() and not (targets[0] == targets[2]).all()  # E episodes share a task
    for _ in range(3):
        obs, reward, terminated, truncated, _ = env.step(torch.zeros(6, 4))
    assert reward.shape == (6,) and env.episode_success.shape == (6,) and not bool(truncated.any())
    with pytest.raises(EnvFailure, match="failed at step 4"):
        env.step(torch.zeros(6, 3))  # a sub-env raising (wrong action size)
    env.close()


@needs_metaworld
def test_a_reset_gives_each_sub_env_its_new_task_in_one_reset():
    """The task-select wrapper takes the task at the reset itself (no separate sample_tasks, which reset each
    sub-env a second time: a fifth of a reach-v3 collection); a new batch's goals arrive."""
    fam = envs.family("MetaWorldML1")
    dist = fam.distribution(env_name="reach-v3")
    env = fam.batched_env(dist, 2, 2, 10)
    env.reset(seed=0, options={"tasks": dist.sample(2, torch.Generator().manual_seed(0))})
    before = [sub.unwrapped._target_pos.copy() for sub in env._active.envs]
    resets = []
    for i, sub in enumerate(env._active.envs):
        original = sub.unwrapped.reset
        sub.unwrapped.reset = lambda *a, _i=i, _f=original, **k: (resets.append(_i), _f(*a, **k))[1]
    new = dist.sample(2, torch.Generator().manual_seed(5))
    env.reset(seed=1, options={"tasks": new})
    assert sorted(resets) == [0, 1, 2, 3]
    goals = [sub.unwrapped._target_pos for sub in env._active.envs]
    assert all((goals[j] == goals[j + 1]).all() for j in (0, 2)) and not (goals[0] == goals[2]).all()
    assert not any((g == b).all() for g, b in zip(goals, before))  # the new batch's goals, not the old ones
    env.close()


@needs_metaworld
def test_an_async_worker_failure_becomes_an_env_failure():
    dist = envs.family("MetaWorldML1").distribution(env_name="reach-v3", vector="async")
    env = envs.family("MetaWorldML1").batched_env(dist, 2, 1, 10)
    env.reset(seed=0, options={"tasks": dist.sample(2, torch.Generator().manual_seed(0))})
    with pytest.raises(EnvFailure, match="MetaWorldML1: a sub-env failed"):
        env.step(torch.zeros(2, 3))
    env.close()


@needs_metaworld
def test_an_ml10_batch_that_splits_its_skills_unevenly_is_a_config_error_before_training(tmp_path):
    from metarl.run.config import Config, from_dict
    from metarl.core.errors import ConfigError
    from metarl.run.trainer import Trainer

    def config(meta_batch_size, eval_tasks):
        return from_dict(Config, {
            "task": {"name": "MetaWorldML10", "horizon": 10}, "model": {"hidden": [8, 8]},
            "learner": {"algo": "maml", "inner_lr": 0.1}, "outer": {"optimizer": "trpo"},
            "train": {"iterations": 1, "meta_batch_size": meta_batch_size, "eval_every": 0},
            "eval": {"num_tasks": eval_tasks}, "log": {"wandb": "disabled"}, "run_dir": str(tmp_path / "r")}).validate()

    with pytest.raises(ConfigError, match=r"train.meta_batch_size = 4: ML10 train has 10 skills"):
        Trainer(config(4, 5))
    with pytest.raises(ConfigError, match="eval.num_tasks = 8: ML10 test has 5 skills"):
        Trainer(config(10, 8))
    assert not (tmp_path / "r").exists()  # nothing written


@needs_metaworld
def test_the_official_evaluation_plays_each_split_on_its_own_goals():
    # gym.make_vec("Meta-World/ML1-train") builds the test split in Meta-World 3.1.1: ours must not
    from envs.meta_world import MetaWorldTasks
    from envs.meta_world.evaluation import official_envs

    dist = MetaWorldTasks("ML1", "reach-v3")
    for split, other in (("train", "test"), ("test", "train")):
        envs = official_envs(dist, split, meta_batch_size=5, seed=0, recurrent=False, max_episode_steps=20)
        held = {task for tasks in envs.get_attr("tasks") for task in tasks}
        envs.close()
        assert len(held) == 50 and held <= set(dist.task_lists[split]) and not held & set(dist.task_lists[other])


def tiny_ml1_run(algo, run_dir):
    """A 1-iteration ML1 reach-v3 run of MAML-TRPO or RL² at toy sizes."""
    from metarl.run.config import Config, from_dict
    from metarl.run.trainer import Trainer

    learner = {"algo": "rl2"} if algo == "rl2" else {"algo": "maml", "inner_lr": 0.1}
    outer = {"optimizer": "ppo"} if algo == "rl2" else {"optimizer": "trpo", "hvp": "gauss_newton"}
    cfg = from_dict(Config, {
        "task": {"name": "MetaWorldML1", "horizon": 10, "options": {"env_name": "reach-v3"}},
        "model": {"hidden": [8] if algo == "rl2" else [8, 8]}, "learner": learner, "outer": outer,
        "rl": {"episodes_per_task": 2}, "train": {"iterations": 1, "meta_batch_size": 2, "eval_every": 0},
        "eval": {"num_tasks": 2, "episodes_per_task": 2, "steps": 1},
        "log": {"wandb": "disabled", "progress": False, "console": False}, "device": "cpu",
        "run_dir": str(run_dir)}).validate()
    return Trainer(cfg).run()


@needs_metaworld
@pytest.mark.parametrize("algo", ["maml", "rl2"])
def test_ml1_reach_trains_through_the_trainer(algo, tmp_path):
    result = tiny_ml1_run(algo, tmp_path / algo)
    assert result["iterations"] == 1
    assert set(result["eval"]) >= {"return", "success"}


@needs_metaworld
@pytest.mark.parametrize("algo", ["maml", "rl2"])
def test_metaworlds_own_evaluation_scores_a_checkpoint(algo, tmp_path):
    import json

    from envs.meta_world.evaluation import evaluate
    from metarl.run.evaluate import load_run

    tiny_ml1_run(algo, tmp_path / algo)
    checkpoint = tmp_path / algo / "checkpoint.pt"
    _, run, meta, state = load_run(checkpoint)
    result = evaluate(run, meta, state["iteration"], checkpoint, tmp_path / "mw.json", repeats=2, meta_batch_size=2,
                      adaptation_episodes=1, evaluation_episodes=1, max_episode_steps=30)
    saved = json.loads((tmp_path / "mw.json").read_text())
    assert (tmp_path / "mw.png").is_file() and saved["versions"]["mujoco"] == "3.3.0"
    assert saved["protocol"]["max_episode_steps"] == 30 and saved["wall_s"] > 0
    for split in ("train", "test"):
        assert len(result[split]["success_per_repeat"]) == 2 and 0 <= result[split]["success_mean"] <= 1
        # reward v2 pays at most 10 per step: 30-step episodes bound the return (the option reached the envs)
        assert 0 < result[split]["return_mean"] <= 30 * 10
