"""scripts/gpu_check.sh on a machine without a GPU: its arguments, its one JSON line, and a clear refusal."""
import json
import subprocess
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"


def run(*args, tmp_path):
    return subprocess.run(["bash", str(SCRIPT), "--out", str(tmp_path / "out"), *args], capture_output=True,
                          text=True, timeout=120)


def test_dry_run_prints_every_step_and_one_json_line_of_figures(tmp_path):
    r = run("--dry-run", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["dry_run"] is True and summary["failures"] == []
    for key in ("warp_env_steps_per_s_4096", "warp_env_steps_per_s_16384", "omniglot_speedup_vs_loop",
                "maml_trpo_iteration_s", "pytest_gpu_passed", "train_omniglot_ok"):
        assert key in summary and summary[key] is None
    for step in ("pytest -m gpu", "configs/sinusoid_maml.yaml", "configs/omniglot_5way1shot.yaml",
                 "configs/nav2d_maml_trpo.yaml", "--tasks 128 --episodes 128", "bench_mujoco_maml_trpo.py"):
        assert step in r.stderr
    assert json.loads((tmp_path / "out" / "gpu_check.json").read_text()) == summary


def test_bad_arguments_are_refused_with_the_usage(tmp_path):
    r = run("--frobnicate", tmp_path=tmp_path)
    assert r.returncode == 2 and "unknown argument '--frobnicate'" in r.stderr
    r = run("--help", tmp_path=tmp_path)
    assert r.returncode == 0 and "--wheels DIR" in r.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_it_stops_at_once_and_says_why(tmp_path):
    import sys

    r = run("--skip-install", "--python", sys.executable, tmp_path=tmp_path)
    assert r.returncode == 3 and "sees no CUDA device" in r.stderr
