"""Faults a user meets, each reproduced: nothing lost, nothing silently wrong, and every refusal one line that says
the command that works. (1) a run stopped before its first checkpoint; (2) two trainings in one run directory;
(3) write failures; (4) a checkpoint evaluated with another model's shapes; (5) damaged Omniglot caches;
(6) the smaller ones: non-finite values, task option errors, iteration numbers, W&B's environment, --resume
without --config, a run directory as --checkpoint, refused pickles, stray files."""
import errno
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from metarl.core.errors import ConfigError, NonFiniteLossError, RunDirBusy, TrainingInterrupted, WriteError
from metarl.run.checkpoint import load_checkpoint
from metarl.run.config import Config
from metarl.run.rundir import RunDir
from metarl.run.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--log.wandb", "disabled", "--log.no_progress", "--log.no_console", "--device", "cpu"]


def small(run_dir, iterations=6, checkpoint_every=3, **changes) -> Config:
    cfg = Config()
    cfg.run_dir, cfg.device, cfg.seed = str(run_dir), "cpu", 3
    cfg.log.wandb, cfg.log.console, cfg.log.progress = "disabled", False, False
    cfg.model.hidden = (8, 8)
    cfg.train.meta_batch_size, cfg.train.iterations, cfg.train.eval_every = 4, iterations, 0
    cfg.train.checkpoint_every, cfg.train.log_every = checkpoint_every, 1
    cfg.eval.num_tasks, cfg.eval.steps = 10, 1
    for path, value in changes.items():
        section, name = path.split("__")
        setattr(getattr(cfg, section), name, value)
    return cfg.validate()


def params(run_dir) -> torch.Tensor:
    return torch.cat([v.reshape(-1) for v in load_checkpoint(run_dir)["meta_params"]["theta"].values()])


def script(name, *args, env=None):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], capture_output=True, text=True,
                          timeout=300, env=env)


def one_line_error(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and all(f in lines[0] for f in fragments), proc.stderr


# ----------------------------------------------------------------- (1) a run stopped before its first checkpoint

def interrupt_at(trainer, iteration, monkeypatch):
    step = trainer.step

    def interrupted():
        if trainer.iteration == iteration:
            raise KeyboardInterrupt
        return step()

    monkeypatch.setattr(trainer, "step", interrupted)


@pytest.mark.parametrize("again_with_resume", [False, True])
def test_a_run_stopped_before_its_first_checkpoint_restarts_with_the_same_command(tmp_path, monkeypatch,
                                                                                 again_with_resume):
    reference = tmp_path / "reference"
    Trainer(small(reference)).run()
    t = Trainer(small(tmp_path / "run"))
    interrupt_at(t, 2, monkeypatch)  # checkpoint_every 3: none written yet
    with pytest.raises(TrainingInterrupted, match="before the first checkpoint: run the same command again"):
        t.run()
    assert not (tmp_path / "run" / "checkpoint.pt").exists() and (tmp_path / "run" / "config.yaml").exists()
    cfg = small(tmp_path / "run")
    cfg.resume = again_with_resume
    assert Trainer(cfg).run()["iterations_run"] == 6
    assert torch.equal(params(tmp_path / "run"), params(reference))  # started over: the uninterrupted run's end
    logged = [json.loads(ln)["step"] for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if '"step"' in ln and "train/meta_loss" in ln]
    assert logged == [1, 2, 3, 4, 5, 6]  # the stopped attempt's lines went with it


def test_a_nan_at_the_first_iteration_leaves_a_directory_the_same_command_can_use(tmp_path):
    with pytest.raises(NonFiniteLossError, match="no checkpoint had been written yet .the same command starts it over"):
        Trainer(small(tmp_path / "run", outer__lr=1e30)).run()
    assert Trainer(small(tmp_path / "run")).run()["iterations_run"] == 6


def test_resume_of_nothing_starts_and_says_so_and_overwrite_of_a_checkpointed_run_says_what_works(tmp_path):
    cfg, said = small(tmp_path / "none"), []
    cfg.resume = True  # e.g. a requeued job that always resumes, stopped before it wrote anything
    assert Trainer(cfg, said.append).run()["iterations_run"] == cfg.train.iterations
    assert said[0] == f"nothing to resume in {tmp_path / 'none'}: starting at iteration 0"
    Trainer(small(tmp_path / "run")).run()
    with pytest.raises(ConfigError, match="continue it with the same command plus --resume"):
        Trainer(small(tmp_path / "run")).run()


# ----------------------------------------------------------------- (2) two trainings in one run directory

def test_a_second_training_in_a_locked_run_directory_is_refused_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); "
                               "from metarl.run.rundir import RunDir; RunDir(sys.argv[2]).acquire(); "
                               "print('held', flush=True); time.sleep(60)", str(ROOT), str(run)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirBusy, match=f"in use by another training .pid {holder.pid} on "):
            Trainer(small(run)).run()
        assert not (run / "config.yaml").exists()  # the refused trainer wrote nothing
    finally:
        holder.kill()  # a dead holder's lock is released by the kernel: no stale lock to clean up
        holder.wait()
    assert Trainer(small(run)).run()["iterations_run"] == 6


def test_a_resume_started_while_the_run_trains_is_refused(tmp_path):
    run = tmp_path / "run"
    Trainer(small(run, iterations=3)).run()
    first = RunDir(run)
    first.acquire()  # the original training, still running
    try:
        cfg = small(run)
        cfg.resume = True
        before = (run / "metrics.jsonl").read_text()
        with pytest.raises(RunDirBusy):
            Trainer(cfg).run()
        assert (run / "metrics.jsonl").read_text() == before
    finally:
        first.release()


# ----------------------------------------------------------------- (3) write failures

@pytest.mark.parametrize("where", ["/proc/nope", "under-a-file"])
def test_an_unwritable_run_dir_is_a_one_line_error(tmp_path, where):
    if where == "under-a-file":
        (tmp_path / "file").write_text("x")
        where = str(tmp_path / "file" / "run")
    one_line_error(script("train.py", "--train.iterations", "2", "--run_dir", where, *QUIET), "cannot", where)


def test_evaluate_checks_its_output_path_before_evaluating(tmp_path):
    Trainer(small(tmp_path / "run")).run()
    start = time.perf_counter()
    proc = script("evaluate.py", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--out", "/proc/nope/x.json",
                  "--eval.num_tasks", "100000")  # would take minutes to evaluate
    one_line_error(proc, "/proc/nope")
    assert time.perf_counter() - start < 60


def test_a_full_disk_keeps_the_old_files_and_is_one_error(tmp_path, monkeypatch):
    import metarl.core.files as files

    run = tmp_path / "run"
    Trainer(small(run)).run()
    old_eval, old_checkpoint = (run / "eval.json").read_bytes(), (run / "checkpoint.pt").read_bytes()
    real_replace = os.replace

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "replace", full)
    from metarl.run.checkpoint import save_checkpoint
    from metarl.run.evaluate import evaluate_checkpoint

    with pytest.raises(WriteError, match="could not write .*eval.json .the previous file, if any, is kept.: No space"):
        evaluate_checkpoint(run / "checkpoint.pt", ["--eval.num_tasks", "5"], run / "eval.json")
    with pytest.raises(WriteError, match="checkpoint.pt .the previous file, if any, is kept.: No space"):
        save_checkpoint(run / "checkpoint.pt", {"x": torch.zeros(3)})
    monkeypatch.setattr(files.os, "replace", real_replace)
    assert (run / "eval.json").read_bytes() == old_eval and (run / "checkpoint.pt").read_bytes() == old_checkpoint
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]  # no half-written leftovers


# ----------------------------------------------------------------- (4) shapes of a checkpoint against the model

@pytest.mark.parametrize("hidden", [["7"], ["10", "10"]])
def test_evaluating_a_checkpoint_with_other_shapes_is_refused(tmp_path, hidden):
    Trainer(small(tmp_path / "run")).run()  # an 8 x 8 network
    proc = script("evaluate.py", "--checkpoint", str(tmp_path / "run"), "--model.hidden", *hidden,
                  "--out", str(tmp_path / "e.json"))
    one_line_error(proc, "meta-parameter theta.")
    assert not (tmp_path / "e.json").exists()


# ----------------------------------------------------------------- (5) damaged Omniglot caches

@pytest.mark.parametrize("damage", ["truncated", "bit-flipped"])
def test_a_damaged_omniglot_cache_is_detected_and_rebuilt(tmp_path, damage):
    from envs.omniglot_data import default_data_dir, load_archive

    if not (default_data_dir() / "images_background_small2.zip").is_file():
        pytest.skip("Omniglot small archives not found")
    good = load_archive("images_background_small2", cache_dir=tmp_path)
    (cache,) = tmp_path.glob("*.pt")
    blob = bytearray(cache.read_bytes())
    if damage == "truncated":
        blob = blob[: len(blob) // 2]
    else:  # one pixel of the stored images, flipped: the file still loads
        data = torch.load(cache, weights_only=True)
        data["images"].view(-1)[1234] ^= 255
        torch.save(data, cache)
        blob = bytearray(cache.read_bytes())
    cache.write_bytes(bytes(blob))
    with pytest.warns(RuntimeWarning, match="damaged .it does not verify.: rebuilding"):
        again = load_archive("images_background_small2", cache_dir=tmp_path)
    assert torch.equal(again.images, good.images)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(load_archive("images_background_small2", cache_dir=tmp_path).images, good.images)


# ----------------------------------------------------------------- (6) the smaller ones

@pytest.mark.parametrize("args,message", [
    (["--outer.lr", "inf"], "outer.lr must be a finite number, got inf"),
    (["--task.name", "Omniglot", "--model.arch", "conv", "--task.options.ways", "abc"],
     "task.options.ways must be an integer, got 'abc'"),
    (["--task.name", "Navigation2D", "--task.options.wayz", "3"], "task.options.wayz is not an option of Navigation2D"),
])
def test_bad_values_are_one_line_errors_in_the_configs_words(tmp_path, args, message):
    one_line_error(script("train.py", *args, "--run_dir", str(tmp_path / "r"), *QUIET), message)
    assert not (tmp_path / "r").exists()


def test_the_nan_message_numbers_the_iteration_as_the_log_does(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError) as err:
        Trainer(small(run, iterations=50, checkpoint_every=1, outer__lr=1e20)).run()
    logged = [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines() if '"step"' in ln]
    assert err.value.iteration == max(logged) + 1 == load_checkpoint(run)["iteration"] + 1


def test_wandb_disabled_in_the_environment_wins_over_the_config(tmp_path, monkeypatch):
    from metarl.run.logger import WandbLogger, make_logger

    monkeypatch.setenv("WANDB_MODE", "disabled")
    cfg = Config()
    cfg.log.wandb = "offline"
    logger = make_logger(cfg.log, tmp_path, {}, "x")
    assert not any(isinstance(lg, WandbLogger) for lg in logger.loggers) and not (tmp_path / "wandb").exists()


def test_resume_without_config_uses_the_runs_own_and_a_run_directory_is_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = script("train.py", "--config", str(ROOT / "configs/sinusoid_maml.yaml"), "--train.iterations", "4",
                  "--train.checkpoint_every", "2", "--eval.num_tasks", "10", "--model.hidden", "8", "8",
                  "--run_dir", str(run), *QUIET)
    assert proc.returncode == 0, proc.stderr
    proc = script("train.py", "--resume", "--train.iterations", "6", "--run_dir", str(run), *QUIET)
    assert proc.returncode == 0, proc.stderr  # the model (8 x 8) came from RUN_DIR/config.yaml, not the defaults
    assert load_checkpoint(run)["iteration"] == 6
    proc = script("evaluate.py", "--checkpoint", str(run), "--eval.num_tasks", "10", "--out", str(tmp_path / "e.json"))
    assert proc.returncode == 0 and json.loads((tmp_path / "e.json").read_text())["iteration"] == 6, proc.stderr


def test_a_malicious_checkpoint_is_refused_in_one_line_with_no_warning_leaking(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    bad = tmp_path / "evil.pt"
    torch.save({"meta_params": Evil(), "config": {}}, bad)
    one_line_error(script("evaluate.py", "--checkpoint", str(bad)), "corrupt or not a metarl checkpoint")
    assert not (tmp_path / "pwned").exists()


def test_the_documented_evaluate_command_leaves_the_tracked_checkpoints_folder_clean():
    readme = (ROOT / "checkpoints" / "README.md").read_text()
    for line in readme.splitlines():
        if "scripts/evaluate.py" in line:
            assert "--out runs/" in line, line


def test_no_stray_folders_after_the_tests():
    addopts = (ROOT / "pyproject.toml").read_text()
    assert "-p no:benchmark" in addopts  # a pytest-benchmark in the system packages would leave .benchmarks/


def test_ctrl_c_lets_a_recorded_run_finish_its_own_shutdown(tmp_path):
    """Ctrl-C reaches the whole process group: scripts/record.py waits for the run (which is writing its
    checkpoint) instead of killing it as subprocess.run would, records nothing and exits 130."""
    import signal

    started, done = tmp_path / "started", tmp_path / "checkpoint_written"
    child = ("import signal, sys, time\n"
             "def stop(*_):\n"
             "    time.sleep(1.0)  # a checkpoint being written\n"
             f"    open({str(done)!r}, 'w').write('ok')\n"
             "    sys.exit(130)\n"
             "signal.signal(signal.SIGINT, stop)\n"
             f"open({str(started)!r}, 'w').write('ok')\n"
             "time.sleep(60)\n")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "scripts/record.py", "--name", "interrupted", "--results", str(tmp_path),
                             "--", sys.executable, "-c", child], cwd=root, start_new_session=True,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert done.read_text() == "ok"
    assert proc.returncode == 130 and "interrupted, nothing recorded" in err
    assert not (tmp_path / "interrupted" / "record.json").exists()


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_stop_request_after_the_recorded_command_finished_keeps_its_record(tmp_path, signame):
    """A SIGTERM or Ctrl-C that reaches scripts/record.py while a command that ignores it runs to its end (as a
    training run does in its last moments): the command's result is recorded, its output from before the signal
    too, then record.py stops with 130 as asked."""
    import signal

    child = ("import os, signal, time\n"
             f"signal.signal(signal.{signame}, signal.SIG_IGN)\n"
             "print('before the signal', flush=True)\n"
             f"os.kill(os.getppid(), signal.{signame})\n"
             "time.sleep(0.5)\n"
             "print('{\"figure\": 7}')\n")
    # a shell's background job starts with Ctrl-C ignored; record.py here takes it as from a terminal
    proc = subprocess.run([sys.executable, "scripts/record.py", "--name", "late", "--results", str(tmp_path),
                           "--", sys.executable, "-c", child], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.returncode == 130 and "recorded, then stopped" in proc.stderr, proc.stderr[-2000:]
    record = json.loads((tmp_path / "late" / "record.json").read_text())
    assert record["returncode"] == 0 and record["figures"] == {"figure": 7}
    assert "before the signal" in (tmp_path / "late" / "output.txt").read_text()


@pytest.mark.parametrize("target", ["process group", "wrapper alone"])
def test_sigterm_to_a_recorded_run_stops_it_after_the_iteration_with_its_checkpoint(tmp_path, target):
    """`kill -TERM -- -PGID` (a scheduler's preemption) or `kill PID` of scripts/record.py: either way the training
    stops after its current iteration with a checkpoint of it (none is due before iteration 1000), record.py waits
    for it, records nothing and exits 130; a run not stopped cleanly would leave no checkpoint at all."""
    import signal

    run_dir, results = tmp_path / "run", tmp_path / "results"
    train = [sys.executable, "scripts/train.py", "--config", "configs/sinusoid_maml.yaml", "--run_dir", str(run_dir),
             "--train.iterations", "100000", "--train.checkpoint_every", "1000", "--train.eval_every", "0",
             "--train.log_every", "1", *QUIET]
    proc = subprocess.Popen([sys.executable, "scripts/record.py", "--name", "terminated", "--results", str(results),
                             "--", *train], cwd=ROOT, start_new_session=True, stderr=subprocess.PIPE, text=True)
    metrics, deadline = run_dir / "metrics.jsonl", time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 3) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    if target == "process group":
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "terminated: interrupted, nothing recorded" in err, err[-2000:]
    logged = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert load_checkpoint(run_dir)["iteration"] == logged[-1] >= 3
    assert not (results / "terminated" / "record.json").exists()
