"""Training end to end on CPU: learning happens, resume reproduces, bad runs stop cleanly."""
import json

import pytest
import torch

from metarl.checkpoint import load_checkpoint, save_checkpoint
from metarl.config import Config
from metarl.errors import CheckpointError, ConfigError, NonFiniteLossError
from metarl.trainer import Trainer


def small_config(tmp_path, **train):
    cfg = Config()
    cfg.run_dir = str(tmp_path / "run")
    cfg.device = "cpu"
    cfg.log.wandb = "disabled"
    cfg.log.console = False
    cfg.log.progress = False
    cfg.model.hidden = (16, 16)
    cfg.train.meta_batch_size = 8
    cfg.train.iterations = 20
    cfg.train.eval_every = 0
    cfg.train.checkpoint_every = 10
    cfg.train.log_every = 5
    cfg.eval.num_tasks = 50
    cfg.eval.steps = 2
    cfg.eval.k_query = 20
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg.validate()


def test_meta_training_lowers_held_out_loss_after_adaptation(tmp_path):
    cfg = small_config(tmp_path, iterations=400, meta_batch_size=10, lr=0.003)
    cfg.model.hidden = (40, 40)
    t = Trainer(cfg)
    before = t.evaluator(200).run(t.learner, t.meta)
    after = t.run()["eval"]
    assert after["loss"]["mean"][1] < 0.7 * before["loss"]["mean"][1]
    # adaptation itself helps on held-out tasks after meta-training
    assert after["loss"]["mean"][1] < after["loss"]["mean"][0]
    assert (tmp_path / "run" / "eval.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert saved["steps"] == [0, 1, 2] and len(saved["loss"]["ci95"]) == 3


def final_params(trainer):
    return {k: v.clone() for k, v in trainer.meta["theta"].items()}


def test_resume_ends_with_the_same_parameters_as_an_uninterrupted_run(tmp_path):
    full = Trainer(small_config(tmp_path / "a"))
    full.run()
    first = Trainer(small_config(tmp_path / "b", iterations=10))
    first.run()
    cfg = small_config(tmp_path / "b")
    cfg.resume = True
    resumed = Trainer(cfg)
    resumed.run()
    assert resumed.iteration == 20
    for k, v in final_params(full).items():
        assert torch.equal(v, resumed.meta["theta"][k]), k
    # and a different seed really gives different parameters
    other = small_config(tmp_path / "c")
    other.seed = 1
    t = Trainer(other)
    t.run()
    assert not torch.equal(t.meta["theta"]["0.weight"], full.meta["theta"]["0.weight"])


def test_resume_with_a_different_learner_config_is_refused(tmp_path):
    Trainer(small_config(tmp_path, iterations=10)).run()
    cfg = small_config(tmp_path)
    cfg.resume = True
    cfg.learner.inner_steps = 3
    with pytest.raises(CheckpointError, match="learner"):
        Trainer(cfg).run()


def test_existing_run_without_resume_is_refused(tmp_path):
    Trainer(small_config(tmp_path, iterations=10)).run()
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(small_config(tmp_path)).run()


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = small_config(tmp_path, iterations=200, checkpoint_every=1, lr=1e20)  # explodes after one step
    t = Trainer(cfg)
    with pytest.raises(NonFiniteLossError, match=r"at iteration \d+") as err:
        t.run()
    kept = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert err.value.iteration >= 1 and kept["iteration"] == err.value.iteration
    assert all(torch.isfinite(v).all() for v in kept["meta_params"]["theta"].values())


def test_checkpoint_is_atomic_and_corrupt_files_are_reported(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"meta_params": {"theta": {"w": torch.ones(2)}}})
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temp file left behind
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_reptile_and_meta_sgd_train_through_the_same_loop(tmp_path):
    cfg = small_config(tmp_path / "r", iterations=30)
    cfg.learner.algo, cfg.learner.inner_steps, cfg.train.optimizer, cfg.train.lr = "reptile", 3, "sgd", 0.5
    Trainer(cfg).run()
    cfg = small_config(tmp_path / "m", iterations=30)
    cfg.learner.learn_inner_lr = True
    t = Trainer(cfg)
    t.run()
    lr = t.meta["log_inner_lr"]["0.weight"].exp()
    assert not torch.allclose(lr, torch.full_like(lr, 0.01))


def test_jsonl_metrics_are_written(tmp_path):
    cfg = small_config(tmp_path)
    cfg.log.jsonl = True
    Trainer(cfg).run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "train/meta_loss" in r]
    assert steps == [5, 10, 15, 20]
    assert any("eval/loss_step2" in r for r in rows)


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_flat_outer_optimisers_match_torch_optim(kind):
    from metarl.optim import FlatAdam, FlatSGD, cosine_lr

    g = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (4,), (2, 3)]
    tensors = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    ref = [t.clone().requires_grad_(True) for t in tensors]
    flat = torch.cat([t.reshape(-1) for t in tensors])
    lr, steps = 0.01, 20
    ref_opt = torch.optim.Adam(ref, lr=lr) if kind == "adam" else torch.optim.SGD(ref, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=steps)
    opt = FlatAdam(flat) if kind == "adam" else FlatSGD(flat)
    for it in range(steps):
        grads = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
        for p, gr in zip(ref, grads):
            p.grad = gr.clone()
        ref_opt.step()
        sched.step()
        opt.step(torch.cat([gr.reshape(-1) for gr in grads]), cosine_lr(lr, it, steps))
    torch.testing.assert_close(flat, torch.cat([p.detach().reshape(-1) for p in ref]), rtol=1e-12, atol=1e-12)
    assert not torch.equal(flat, torch.cat([t.reshape(-1) for t in tensors]))


def test_compile_failure_falls_back_to_eager_with_a_warning(tmp_path, monkeypatch):
    def broken_compile(fn, **kwargs):
        def call(*args):
            raise RuntimeError("no C++ compiler found")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    cfg = small_config(tmp_path / "c", iterations=3)
    cfg.train.compile = True
    compiled = Trainer(cfg)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        compiled.step()
    compiled.step()
    eager = Trainer(small_config(tmp_path / "e", iterations=3))
    eager.step(), eager.step()
    torch.testing.assert_close(compiled.flat, eager.flat, rtol=0, atol=0)


def test_compiled_trainers_with_different_settings_do_not_share_graphs(tmp_path):
    # The compiled meta-gradient guards only on tensors; a second Trainer with the same shapes but another
    # inner_lr must still get its own graph, i.e. the numbers of its eager twin.
    def run(name, inner_lr, compile_):
        cfg = small_config(tmp_path / name, iterations=2)
        cfg.learner.inner_lr, cfg.train.compile = inner_lr, compile_
        t = Trainer(cfg)
        t.step(), t.step()
        return t.flat

    first = run("a", 0.01, True)
    second = run("b", 0.3, True)
    torch.testing.assert_close(first, run("a_eager", 0.01, False), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(second, run("b_eager", 0.3, False), rtol=1e-5, atol=1e-6)
