"""The one trainer, end to end on CPU, for supervised and RL families: learning happens, resume reproduces,
bad runs stop cleanly, a run is never overwritten, checkpoints are one format (old ones upgrade)."""
import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metarl.run.checkpoint import load_checkpoint, save_checkpoint
from metarl.run.config import Config, from_dict
from metarl.core.errors import CheckpointError, ConfigError, NonFiniteLossError, TrainingInterrupted
from metarl.run.stopping import SigtermAsCtrlC
from metarl.run.trainer import Trainer


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


def rl_config(tmp_path, optimizer="trpo", algo="maml", iterations=2, **learner) -> Config:
    outer = {"optimizer": optimizer, **({"epochs": 2, "lr": 1e-3} if optimizer == "ppo" else {}),
             **({"lr": 0.5} if optimizer == "sgd" else {})}
    return from_dict(Config, {
        "task": {"name": "Navigation2D", "horizon": 10},
        "model": {"hidden": [8, 8]},
        "learner": {"algo": algo, "inner_steps": 2, **({} if algo == "lstm" else {"inner_lr": 0.1}), **learner},
        "outer": outer,
        "rl": {"episodes_per_task": 3},
        "train": {"iterations": iterations, "meta_batch_size": 3, "checkpoint_every": 1, "eval_every": 0, "log_every": 1},
        "eval": {"num_tasks": 4, "episodes_per_task": 2, "steps": 2, "plot_tasks": 2},
        "log": {"wandb": "disabled", "progress": False, "console": False},
        "device": "cpu", "run_dir": str(tmp_path),
    }).validate()


def test_meta_training_lowers_held_out_loss_after_adaptation(tmp_path):
    cfg = small_config(tmp_path, iterations=400, meta_batch_size=10)
    cfg.outer.lr = 0.003
    cfg.model.hidden = (40, 40)
    t = Trainer(cfg)
    before = t.evaluator(200).run(t.learner, t.meta)
    after = t.run()["eval"]
    assert after["loss"]["mean"][1] < 0.7 * before["loss"]["mean"][1]
    # adaptation itself helps on held-out tasks after meta-training
    assert after["loss"]["mean"][1] < after["loss"]["mean"][0]
    assert (tmp_path / "run" / "eval.png").stat().st_size > 10_000
    assert (tmp_path / "run" / "eval_episodes.png").stat().st_size > 10_000
    assert (tmp_path / "run" / "learning_curve.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert saved["steps"] == [0, 1, 2] and len(saved["loss"]["ci95"]) == 3 and len(saved["loss"]["per_task"][2]) == 50
    assert saved["family"] == "Sinusoid" and saved["metric"] == "loss" and saved["protocol"]["k_support"] == 5


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
    result = resumed.run()
    assert resumed.iteration == 20 and result["iterations_run"] == 10 and result["iterations"] == 20
    for k, v in final_params(full).items():
        assert torch.equal(v, resumed.meta["theta"][k]), k
    # and a different seed really gives different parameters
    other = small_config(tmp_path / "c")
    other.seed = 1
    t = Trainer(other)
    t.run()
    assert not torch.equal(t.meta["theta"]["0.weight"], full.meta["theta"]["0.weight"])


def test_rl_resume_and_time_limit_continue_exactly(tmp_path):
    full = Trainer(rl_config(tmp_path / "full", iterations=3))
    full.run()
    part = rl_config(tmp_path / "part", iterations=3)
    part.train.time_limit_s = 1e-9  # stops (with a checkpoint) after its first iteration
    result = Trainer(part).run()
    assert result["stopped_early"] and result["iterations"] == 1
    assert load_checkpoint(tmp_path / "part" / "checkpoint.pt")["iteration"] == 1
    cfg = rl_config(tmp_path / "part", iterations=3)
    cfg.resume = True
    resumed = Trainer(cfg)
    result = resumed.run()
    assert result["iterations_run"] == 2 and resumed.env_steps == full.env_steps
    assert torch.equal(full.flat, resumed.flat)


def test_resume_with_a_different_learner_config_is_refused(tmp_path):
    Trainer(small_config(tmp_path, iterations=10)).run()
    cfg = small_config(tmp_path)
    cfg.resume = True
    cfg.learner.inner_steps = 3
    with pytest.raises(CheckpointError, match="learner"):
        Trainer(cfg).run()


@pytest.mark.parametrize("family", ["supervised", "rl"])
def test_existing_run_without_resume_is_refused(tmp_path, family):
    make = (lambda: small_config(tmp_path, iterations=2)) if family == "supervised" else (lambda: rl_config(tmp_path / "run", iterations=1))
    Trainer(make()).run()
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()}
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(make()).run()
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()} == before  # nothing touched
    # a run dir that only got as far as its config and metrics (a crash before the first checkpoint) starts over
    for name in ("checkpoint.pt", "eval.json"):
        (tmp_path / "run" / name).unlink()
    assert Trainer(make()).run()["iterations_run"] == (2 if family == "supervised" else 1)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = small_config(tmp_path, iterations=200, checkpoint_every=1)
    cfg.outer.lr = 1e20  # explodes after one step
    t = Trainer(cfg)
    with pytest.raises(NonFiniteLossError, match=r"at iteration \d+") as err:
        t.run()
    kept = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    # numbered as the log numbers them: the failed iteration is the one after the last good checkpoint
    assert err.value.iteration >= 2 and kept["iteration"] == err.value.iteration - 1
    assert all(torch.isfinite(v).all() for v in kept["meta_params"]["theta"].values())


def test_ctrl_c_names_the_checkpoint_that_survived_and_how_to_resume(tmp_path, monkeypatch):
    t = Trainer(small_config(tmp_path, iterations=20, checkpoint_every=5))
    step = t.step

    def interrupted_at_7():
        if t.iteration == 7:
            raise KeyboardInterrupt
        return step()

    monkeypatch.setattr(t, "step", interrupted_at_7)
    with pytest.raises(TrainingInterrupted, match="interrupted at iteration 8: the checkpoint of iteration 5") as e:
        t.run()
    assert "--resume" in str(e.value) and load_checkpoint(tmp_path / "run" / "checkpoint.pt")["iteration"] == 5


def ctrl_c_during(trainer, iteration, monkeypatch, times=1, signum=signal.SIGINT):
    """Ctrl-C (a real SIGINT, `times` of them; or another signal) while the trainer computes iteration `iteration`
    (1-based)."""
    step = trainer.step

    def step_with_ctrl_c():
        if trainer.iteration == iteration - 1:
            for _ in range(times):
                signal.raise_signal(signum)
        return step()

    monkeypatch.setattr(trainer, "step", step_with_ctrl_c)


def test_ctrl_c_stops_after_the_iteration_with_its_checkpoint_and_the_resumed_run_ends_as_an_uninterrupted_one(
        tmp_path, monkeypatch):
    full = Trainer(small_config(tmp_path / "full", checkpoint_every=5))
    full.run()
    said = []
    t = Trainer(small_config(tmp_path / "run", checkpoint_every=5), said.append)
    ctrl_c_during(t, 7, monkeypatch)
    with pytest.raises(TrainingInterrupted, match="stopped at iteration 7 on Ctrl-C, with its checkpoint") as e:
        t.run()
    assert "--resume" in str(e.value) and "Ctrl-C again to stop at once" in said[-1]
    assert load_checkpoint(tmp_path / "run" / "run" / "checkpoint.pt")["iteration"] == 7
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C is Python's again
    cfg = small_config(tmp_path / "run", checkpoint_every=5)
    cfg.resume = True
    resumed = Trainer(cfg)
    assert resumed.run()["iterations_run"] == 13
    for k, v in final_params(full).items():
        assert torch.equal(v, resumed.meta["theta"][k]), k


def test_sigterm_stops_after_the_iteration_with_its_checkpoint_taking_copies_sent_together_as_one(tmp_path,
                                                                                                  monkeypatch):
    """`kill -TERM -- -PGID` reaches scripts/record.py and the run together, and record.py passes its copy on:
    both are one request to stop after the iteration, not a first and a second."""
    said = []
    t = Trainer(small_config(tmp_path, checkpoint_every=5), said.append)
    ctrl_c_during(t, 7, monkeypatch, times=3, signum=signal.SIGTERM)
    with pytest.raises(TrainingInterrupted, match="stopped at iteration 7 on SIGTERM, with its checkpoint") as e:
        t.run()
    assert e.value.exit_code == 143 and said[-1].startswith("SIGTERM: stopping after this iteration")
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["iteration"] == 7
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_stop_request_during_the_final_evaluation_keeps_the_checkpoint_and_resume_evaluates_it(tmp_path,
                                                                                              monkeypatch, signum):
    """Training has finished and saved when the final evaluation starts: a SIGTERM there (which would kill the
    process by default) or a Ctrl-C ends it with a message naming the final checkpoint, and --resume evaluates it."""
    t = Trainer(small_config(tmp_path, iterations=12, checkpoint_every=5))
    make_evaluator = t.evaluator

    def evaluator_stopped_at_its_start(num_tasks):
        evaluator = make_evaluator(num_tasks)
        run = evaluator.run

        def stopped(*args):
            if signal.getsignal(signum) is signal.SIG_DFL:  # the signal would end pytest itself
                pytest.fail(f"{signum.name} would kill the process during the final evaluation")
            signal.raise_signal(signum)
            return run(*args)
        monkeypatch.setattr(evaluator, "run", stopped)
        return evaluator

    monkeypatch.setattr(t, "evaluator", evaluator_stopped_at_its_start)
    name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
    with pytest.raises(TrainingInterrupted, match=rf"during the final evaluation \({name}\): the checkpoint of "
                                                 "iteration 12 is kept") as e:
        t.run()
    assert e.value.exit_code == 128 + signum and "--resume" in str(e.value)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["iteration"] == 12
    assert not (tmp_path / "run" / "eval.json").exists()
    cfg = small_config(tmp_path, iterations=12, checkpoint_every=5)
    cfg.resume = True
    result = Trainer(cfg).run()
    assert result["iterations_run"] == 0 and (tmp_path / "run" / "eval.json").exists() and "eval" in result


def test_sigterm_as_ctrl_c_takes_copies_of_one_request_once_and_restores_the_default():
    """`kill -TERM -- -PGID` reaches scripts/record.py and the run together, and record.py passes its copy on: a copy
    arriving while the first SIGTERM's KeyboardInterrupt unwinds the final evaluation must not raise again."""
    with SigtermAsCtrlC() as sigterm:
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)  # the copy: taken as the same request
    assert sigterm.signum == signal.SIGTERM and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_second_ctrl_c_interrupts_at_once_and_the_last_periodic_checkpoint_stays(tmp_path, monkeypatch):
    t = Trainer(small_config(tmp_path, checkpoint_every=5))
    ctrl_c_during(t, 8, monkeypatch, times=2)
    with pytest.raises(TrainingInterrupted, match="interrupted at iteration 8: the checkpoint of iteration 5"):
        t.run()
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["iteration"] == 5


def test_checkpoint_is_atomic_and_corrupt_files_are_reported(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"format": 2, "meta_params": {"theta": {"w": torch.ones(2)}}, "config": {}})
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temp file left behind
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_reptile_and_meta_sgd_train_through_the_same_loop(tmp_path):
    cfg = small_config(tmp_path / "r", iterations=30)
    cfg.learner.algo, cfg.learner.inner_steps, cfg.outer.optimizer, cfg.outer.lr = "reptile", 3, "sgd", 0.5
    Trainer(cfg).run()
    cfg = small_config(tmp_path / "m", iterations=30)
    cfg.learner.learn_inner_lr = True
    t = Trainer(cfg)
    t.run()
    lr = t.meta["log_inner_lr"]["0.weight"].exp()
    assert not torch.allclose(lr, torch.full_like(lr, 0.01))


@pytest.mark.parametrize("optimizer,algo", [("trpo", "maml"), ("ppo", "maml"), ("sgd", "reptile"), ("trpo", "lstm")])
def test_rl_same_seed_same_run_and_eval_files(tmp_path, optimizer, algo):
    results = [Trainer(rl_config(tmp_path / f"r{i}", optimizer, algo)).run() for i in range(2)]
    assert results[0]["eval"]["return"]["mean"] == results[1]["eval"]["return"]["mean"]
    assert len(results[0]["eval"]["return"]["mean"]) == 3 and results[0]["env_steps"] > 0
    for name in ("eval.json", "eval.png", "eval_episodes.png", "checkpoint.pt", "config.yaml", "metrics.jsonl"):
        assert (tmp_path / "r0" / name).is_file(), name
    saved = json.loads((tmp_path / "r0" / "eval.json").read_text())
    assert saved["return"]["mean"] == results[0]["eval"]["return"]["mean"] and saved["metric"] == "return"


def test_rl_evaluation_adapts_with_the_learned_inner_lrs_and_the_step_scales(tmp_path):
    from metarl.run.evaluate import Evaluator

    def returns(cfg, shift=0.0):
        t = Trainer(cfg)
        if shift:
            t.meta["log_inner_lr"] = {k: v + shift for k, v in t.meta["log_inner_lr"].items()}
        e = t.evaluator(4)
        assert isinstance(e, Evaluator)
        return e.run(t.learner, t.meta)["return"]["mean"]

    plain = returns(rl_config(tmp_path / "a"))
    assert returns(rl_config(tmp_path / "b", learn_inner_lr=True)) == pytest.approx(plain, abs=1e-4)
    moved = returns(rl_config(tmp_path / "c", learn_inner_lr=True), shift=3.0)
    assert moved[0] == plain[0] and moved[1:] != pytest.approx(plain[1:], abs=1e-3)
    scaled = returns(rl_config(tmp_path / "d", step_lr_scales=(1.0, 1e-6)))
    # the same first step; the second one 1e6 times shorter
    assert scaled[:2] == plain[:2] and scaled[2] != pytest.approx(plain[2], abs=1e-4)


def test_old_format_checkpoints_load(tmp_path):
    """metarl 0.1 checkpoints (two stacks, two layouts) upgrade on load: the RL one's Meta-SGD step sizes
    move from "theta" entries to their own group, config keys to the one schema."""
    new = Trainer(rl_config(tmp_path / "new", learn_inner_lr=True))
    theta = {**new.meta["theta"], **{f"log_inner_lr.{k}": v for k, v in new.meta["log_inner_lr"].items()}}
    old_config = {"env": {"name": "Navigation2D", "episodes_per_task": 3, "horizon": 10},
                  "policy": {"hidden": [8, 8], "activation": "relu", "init_std": 1.0, "last_layer_scale": 1.0, "action_scale": 1.0},
                  "algo": {"algo": "maml_trpo", "inner_lr": 0.1, "inner_steps": 2, "learn_inner_lr": True, "ppo_epochs": 5,
                           "max_kl": 0.01, "gamma": 0.99, "reptile_epsilon": 0.5},
                  "train": {"iterations": 2, "meta_batch_size": 3}, "eval": {"num_tasks": 4, "episodes_per_task": 2},
                  "log": {"wandb": "disabled"}, "seed": 0, "device": "cpu", "run_dir": str(tmp_path / "old")}
    torch.save({"meta_params": {"theta": theta}, "iteration": 2, "env_steps": 10, "elapsed_s": 1.0,
                "algo": {}, "config": old_config}, tmp_path / "rl.pt")
    state = load_checkpoint(tmp_path / "rl.pt")
    assert state["format"] == 2 and set(state["meta_params"]) == {"theta", "log_inner_lr"}
    cfg = from_dict(Config, state["config"]).validate()
    assert (cfg.task.name, cfg.outer.optimizer, cfg.rl.episodes_per_task, cfg.learner.inner_steps) == ("Navigation2D", "trpo", 3, 2)
    from metarl.run.evaluate import evaluate_checkpoint

    summary, _ = evaluate_checkpoint(tmp_path / "rl.pt", ["--eval.steps", "1"], tmp_path / "e.json")
    assert summary["iteration"] == 2 and len(summary["return"]["mean"]) == 2
    old_sup = {"task": {"name": "sinusoid"}, "model": {"hidden": [16, 16]}, "train": {"optimizer": "sgd", "lr": 0.5},
               "learner": {"algo": "reptile"}, "device": "cpu"}
    sup = Trainer(from_dict(Config, {"task": {"name": "sinusoid"}, "model": {"hidden": [16, 16]}, "learner": {"algo": "reptile"},
                                     "outer": {"optimizer": "sgd", "lr": 0.5}, "device": "cpu"}).validate())
    torch.save({"meta_params": {"theta": sup.meta["theta"]}, "optimizer": {"kind": "sgd"}, "iteration": 7,
                "config": old_sup}, tmp_path / "sup.pt")
    state = load_checkpoint(tmp_path / "sup.pt")
    assert state["config"]["outer"] == {"optimizer": "sgd", "lr": 0.5} and state["iteration"] == 7


def test_jsonl_metrics_are_written(tmp_path):
    cfg = small_config(tmp_path)
    cfg.log.jsonl = True
    Trainer(cfg).run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "train/meta_loss" in r]
    assert steps == [5, 10, 15, 20]
    assert any("eval/loss_step2" in r for r in rows)


def test_threads_setting_is_applied(tmp_path):
    before = torch.get_num_threads()
    try:
        Trainer(small_config(tmp_path, threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_flat_outer_optimisers_match_torch_optim(kind):
    from metarl.core.numerics import FlatAdam, FlatSGD, cosine_lr

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
    assert math.isfinite(float(first.sum()))


def test_learning_curve_reads_every_segment_and_keeps_a_repeated_steps_last_value(tmp_path):
    from metarl.run import plots

    path = tmp_path / "metrics.jsonl"
    rows = [{"step": 1, "train/return_pre": -9.0, "train/return_post": -8.0},
            {"step": 2, "train/return_pre": -7.0, "train/return_post": -6.0},
            {"step": 2, "train/return_pre": -5.0, "train/return_post": -4.0},  # a resumed segment re-ran step 2
            {"step": 2, "eval/return_step0": -5.5, "eval/return_step1": -4.5}, {"summary": {"x": 1}}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + '\n{"step": 3, "train/ret')  # a crash cut the last line
    series = plots.read_metrics(path)
    assert series["train/return_pre"] == {1: -9.0, 2: -5.0} and series["eval/return_step1"] == {2: -4.5}
    fig = plots.plot_learning_curve(series, "t")
    assert [line.get_label() for line in fig.axes[0].lines] == [
        "before adaptation", "after adaptation", "held-out return_step0", "held-out return_step1"]
    assert plots.plot_learning_curve(series, trials=True).axes[0].lines[1].get_label() == "last episode of a trial"
    assert plots.plot_learning_curve({"train/accuracy": {1: 0.5}}) is None


def test_the_learning_curve_is_drawn_after_the_final_evaluation_is_logged(tmp_path, monkeypatch):
    from metarl.run import plots

    drawn_from = []
    original = plots.save_learning_curve

    def spy(run_dir, *args, **kwargs):
        drawn_from.append(plots.read_metrics(tmp_path / "run" / "metrics.jsonl"))
        return original(run_dir, *args, **kwargs)

    monkeypatch.setattr(plots, "save_learning_curve", spy)
    cfg = small_config(tmp_path, iterations=4, log_every=1, checkpoint_every=2)
    cfg.eval.num_tasks = 5
    Trainer(cfg).run()
    assert len(drawn_from) == 1 and drawn_from[0]["eval/loss_step1"].keys() == {4}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc's setting")
def test_the_trainer_keeps_freed_memory_so_large_tensors_do_not_fault_afresh(tmp_path):
    """train.keep_freed_memory (default on): a 64 MB tensor made again and again reuses the heap's pages instead
    of fresh mmapped ones (above glibc's 32 MB ceiling, every one faults 16k pages in); off: the default."""
    code = """
import resource, sys
from metarl.run.config import Config
from metarl.run.trainer import Trainer
cfg = Config()
cfg.device, cfg.run_dir, cfg.log.wandb = "cpu", sys.argv[2], "disabled"
cfg.train.keep_freed_memory = sys.argv[1] == "keep"
Trainer(cfg.validate())
import torch
x = torch.ones(16_000_000)
for _ in range(2):
    (x + 1).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    (x + 1).sum()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    faults = {}
    for mode in ("keep", "default"):
        out = subprocess.run([sys.executable, "-c", code, mode, str(tmp_path / mode)], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[1], check=True)
        faults[mode] = int(out.stdout.strip().splitlines()[-1])
    assert faults["keep"] < 2_000 and faults["default"] > 50_000, faults
