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


def test_narrow_batched_products_are_swapped_with_the_same_numbers():
    """The inductor pass that turns CPU bmm's with narrow outputs into bmm(b^T, a^T)^T (MKL is 2-8x slower on
    them) fires on a narrow product, leaves a wide one alone, and changes no number."""
    from metarl.core.compiling import NARROW_BMM, compile_options

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 40, 12, generator=g, dtype=torch.float64), torch.randn(5, 12, 3, generator=g, dtype=torch.float64)

    def f(a, b):
        return torch.bmm(a, b).relu(), torch.bmm(b.transpose(1, 2), a.transpose(1, 2))  # narrow, then wide

    with torch._inductor.config.patch(fx_graph_cache=False), torch._functorch.config.patch(enable_autograd_cache=False):
        torch._dynamo.reset()
        before = NARROW_BMM.rewritten
        narrow, wide = torch.compile(f, fullgraph=True, options=compile_options())(a, b)
        assert NARROW_BMM.rewritten == before + 1
    torch.testing.assert_close(narrow, f(a, b)[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(wide, f(a, b)[1], rtol=1e-12, atol=1e-12)


def test_the_compiled_meta_gradient_equals_the_eager_one(tmp_path):
    eager, compiled = trainer({}, tmp_path / "e"), trainer({"train": {"compile": True}}, tmp_path / "c")
    batch, _ = eager.source.train_batch(0, eager.learner, eager.meta)
    want = eager.problem.gradient(eager.flat, batch)
    got = compiled.problem.gradient(compiled.flat, batch)
    torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-6)
