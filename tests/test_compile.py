"""The compiled fast paths stay whole: torch._dynamo traces each compiled function as one graph. A graph break
(e.g. a Python builtin dynamo cannot trace, such as threading.current_thread() in a model's forward) fails
here, not in a benchmark months later; and the trainer's compiled meta-gradient runs compiled, not in its
eager fallback."""
import warnings

import pytest
import torch

from metarl.run.config import Config, from_dict
from metarl.run.trainer import Trainer


def graph_breaks(fn, *args) -> list[str]:
    torch._dynamo.reset()
    out = torch._dynamo.explain(fn)(*args)
    return [str(b.reason) for b in out.break_reasons] if out.graph_break_count else []


def trainer(cfg: dict, tmp_path) -> Trainer:
    base = {"train": {"meta_batch_size": 4}, "log": {"wandb": "disabled", "progress": False, "console": False},
            "device": "cpu", "run_dir": str(tmp_path / "run")}
    return Trainer(from_dict(Config, {**base, **cfg, "train": {**base["train"], **cfg.get("train", {})}}).validate())


@pytest.mark.parametrize("cfg", [
    {},  # the default: second-order MAML on sinusoid, vmapped over tasks
    {"learner": {"learn_inner_lr": True, "inner_steps": 2}, "model": {"hidden": [16, 16], "residual": True,
                                                                        "norm": "layer"}},
    {"task": {"name": "Navigation2D", "horizon": 10}, "rl": {"episodes_per_task": 2}, "model": {"hidden": [8, 8]},
     "outer": {"optimizer": "ppo"}},  # the RL policy's meta-gradient (MAML-PPO)
], ids=["sinusoid-maml", "sinusoid-metasgd-residual", "navigation2d-maml-ppo"])
def test_the_meta_gradient_is_one_graph(cfg, tmp_path):
    t = trainer(cfg, tmp_path)
    batch, _ = t.source.train_batch(0, t.learner, t.meta)
    assert graph_breaks(t.problem._flat_gradient, t.flat, batch.support, batch.query) == []


def test_the_sampler_step_is_one_graph():
    from envs.navigation import BatchedNavigation2D
    from metarl.core.params import expand
    from metarl.nets import parameters_of
    from metarl.nets.policies import GaussianMLPPolicy
    from metarl.rl.sampler import BatchedSampler

    policy = GaussianMLPPolicy(2, 2, hidden=(8, 8), generator=torch.Generator().manual_seed(0))
    sampler = BatchedSampler(BatchedNavigation2D(3, 2, horizon=10), policy)
    shared = parameters_of(policy)
    sampler.env.reset(seed=0, options={"tasks": {"goal": torch.zeros(3, 2)}})
    obs, noise = sampler.env.state["pos"].clone(), torch.zeros(2, 6, 2)
    for params, body in ((shared, sampler._fused_shared), (expand(shared, 3), sampler._fused_per_task)):
        assert graph_breaks(body, params, obs, noise, torch.tensor(1.0), sampler.env.state) == []


def test_the_trainer_runs_its_meta_gradient_compiled(tmp_path):
    t = trainer({"train": {"compile": True}}, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the eager fallback warns: fail on it
        t.step()
        t.step()
