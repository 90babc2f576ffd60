"""Every benchmark script runs (tiny sizes) and ends with one JSON object holding its figures."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from envs.omniglot_data import default_data_dir

ROOT = Path(__file__).resolve().parents[1]
MUJOCO = importlib.util.find_spec("mujoco") is not None
OMNIGLOT = (default_data_dir() / "images_background_small1.zip").is_file()

CASES = {
    "bench_meta_gradient.py": (["--no-compile", "--repeats", "2", "--rounds", "1", "--tasks", "4", "--processes", "2"],
                               "speedup_vs_loop", True),
    "bench_rollout.py": (["--env", "Navigation2D", "--tasks", "2", "--episodes", "2", "--horizon", "10", "--rounds", "1",
                          "--repeats", "1", "--no-compile"], "speedup_vs_sync_vector_env", True),
    "bench_omniglot.py": (["--tasks", "2", "--repeats", "1", "--rounds", "1"], "speedup_vs_loop", OMNIGLOT),
    "bench_eval.py": (["--iterations", "1", "--tasks", "2", "--rounds", "1", "--eval.steps", "1"], "eval_vs_300_iterations",
                      OMNIGLOT),
    "bench_mujoco_rollout.py": (["--tasks", "2", "--episodes", "2", "--horizon", "10", "--repeats", "1", "--sync-steps", "3"],
                                "fraction_of_ceiling", MUJOCO),
    "bench_distributed.py": (["--config", "configs/sinusoid_maml.yaml", "--iterations", "3", "--skip", "1", "--",
                              "--train.meta_batch_size", "4"], "efficiency", True),
    "bench_mujoco_maml_trpo.py": (["--iterations", "2", "--tasks", "2", "--episodes", "2", "--horizon", "10"],
                                  "seconds_per_iteration", MUJOCO),
}


@pytest.mark.parametrize("script", sorted(CASES))
def test_benchmark_runs_and_prints_its_figures_as_json_last(script):
    args, key, available = CASES[script]
    if not available:
        pytest.skip("needs MuJoCo or the Omniglot archives")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures[key] > 0
