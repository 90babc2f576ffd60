"""The scripts as a user meets them: one-line errors for bad input, a working train -> evaluate round trip."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--log.wandb", "disabled", "--log.no_progress", "--log.no_console", "--device", "cpu"]


def run(script, *args, cwd=None):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_train_then_evaluate_round_trip(tmp_path):
    run_dir = tmp_path / "run"
    proc = run("train.py", "--config", str(ROOT / "configs/sinusoid_maml.yaml"), "--train.iterations", "30",
               "--train.log_every", "10", "--eval.num_tasks", "100", "--eval.steps", "3", "--run_dir", str(run_dir), *FAST)
    assert proc.returncode == 0, proc.stderr
    assert "before adaptation" in proc.stdout
    out = tmp_path / "res.json"
    proc = run("evaluate.py", "--checkpoint", str(run_dir / "checkpoint.pt"), "--out", str(out), "--num_tasks", "100",
               "--steps", "2", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert res["num_tasks"] == 100 and res["steps"] == [0, 1, 2]
    # the same held-out tasks as the training run's final evaluation: identical step-0 loss
    train_eval = json.loads((run_dir / "eval.json").read_text())
    assert res["loss"]["mean"][0] == pytest.approx(train_eval["loss"]["mean"][0], rel=1e-6)
    assert out.with_suffix(".png").stat().st_size > 10_000


def test_bad_inputs_give_one_line_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  iterationz: 5\n")
    assert_one_line_error(run("train.py", "--config", str(bad), *FAST), "unknown config key 'train.iterationz'")
    assert_one_line_error(run("train.py", "--task.name", "sinusoidd", *FAST), "unknown task distribution", "sinusoid")
    assert_one_line_error(run("train.py", "--train.lr", "-1", *FAST), "train.lr must be positive")
    assert_one_line_error(run("train.py", "--task.k_support", "0", *FAST), "task.k_support must be positive")
    assert_one_line_error(run("train.py", "--resume", "--run_dir", str(tmp_path / "none"), *FAST), "checkpoint not found")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert_one_line_error(run("train.py", "--resume", "--run_dir", str(corrupt), *FAST), "corrupt")
    assert_one_line_error(run("evaluate.py", "--checkpoint", str(tmp_path / "nope.pt")), "checkpoint not found")


def test_non_finite_loss_is_reported_with_its_iteration(tmp_path):
    proc = run("train.py", "--train.lr", "1e20", "--train.iterations", "50", "--train.checkpoint_every", "1",
               "--run_dir", str(tmp_path / "r"), *FAST)
    assert_one_line_error(proc, "non-finite loss", "at iteration", "last good checkpoint kept")


def test_help_lists_every_field_with_its_doc():
    proc = run("train.py", "--help")
    assert proc.returncode == 0
    for flag in ("--learner.first_order", "--train.meta_batch_size", "--eval.num_tasks", "--log.wandb", "--resume"):
        assert flag in proc.stdout
    assert "Drop second-order terms" in proc.stdout
