"""The scripts as a user meets them: one-line errors (exit 2, nothing written) for bad input, train ->
evaluate round trips for both families, and the rough edges a new user hit (each has a test here)."""
import json
import runpy
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--log.wandb", "disabled", "--log.no_progress", "--log.no_console", "--device", "cpu"]
TINY_RL = ["--task.horizon", "10", "--rl.episodes_per_task", "3", "--train.meta_batch_size", "4",
           "--eval.num_tasks", "4", "--eval.episodes_per_task", "2", "--model.hidden", "8", "8"]


def run(script, *args, cwd=None):
    """The script as a separate process (what a user runs)."""
    return subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys, monkeypatch):
    """The script's main() in this process (fast): (exit code, stdout, stderr)."""

    def call(script, *args):
        monkeypatch.setattr(sys, "argv", [script, *args])
        code = 0
        try:
            runpy.run_path(str(ROOT / "scripts" / script), run_name="__main__")
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return call


def assert_one_line_error(proc, *fragments, code=2):
    assert proc.returncode == code, (proc.returncode, proc.stderr)
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
    assert "before adaptation" in proc.stdout and "30 iterations" in proc.stdout
    out = tmp_path / "res.json"
    proc = run("evaluate.py", "--checkpoint", str(run_dir / "checkpoint.pt"), "--out", str(out), "--eval.num_tasks",
               "100", "--eval.steps", "2", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert res["num_tasks"] == 100 and res["steps"] == [0, 1, 2]
    # the same held-out tasks as the training run's final evaluation: identical step-0 loss
    train_eval = json.loads((run_dir / "eval.json").read_text())
    assert res["loss"]["mean"][0] == pytest.approx(train_eval["loss"]["mean"][0], rel=1e-6)
    assert out.with_suffix(".png").stat().st_size > 10_000 and (tmp_path / "res_episodes.png").is_file()


def test_rl_config_trains_and_evaluates_through_the_same_scripts(tmp_path, cli):
    run_dir = tmp_path / "nav"
    args = ["--config", str(ROOT / "configs/nav2d_maml_trpo.yaml"), "--train.iterations", "2", *TINY_RL,
            "--run_dir", str(run_dir), *FAST]
    res = cli("train.py", *args)
    assert res.returncode == 0, res.stderr
    assert "return" in res.stdout and (run_dir / "eval_episodes.png").is_file()
    # re-running the same command would overwrite a run: refused, nothing touched
    stamp = (run_dir / "checkpoint.pt").stat().st_mtime_ns
    assert_one_line_error(cli("train.py", *args), "already holds a run", "--resume")
    assert (run_dir / "checkpoint.pt").stat().st_mtime_ns == stamp
    res = cli("evaluate.py", "--checkpoint", str(run_dir / "checkpoint.pt"), "--eval.steps", "1", "--device", "auto")
    assert res.returncode == 0, res.stderr
    assert json.loads((run_dir / "evaluate.json").read_text())["steps"] == [0, 1]


BAD = [
    (["--train.iterationz", "5"], "unknown flag --train.iterationz; did you mean --train.iterations?"),
    (["--train.iterations", "abc"], "train.iterations must be an integer, got 'abc'"),
    (["--task.name", "sinusoidd"], "unknown task family 'sinusoidd'"),
    (["--outer.lr", "-1"], "outer.lr must be positive"),
    (["--task.k_support", "0"], "task.k_support must be positive"),
    (["--learner.lstm_hidden", "5"], "learner.lstm_hidden is not used with learner.algo maml"),
    (["--rl.gamma", "0.9"], "rl.gamma is not used with a supervised task family"),
    (["--outer.optimizer", "trpo"], "outer.optimizer trpo is an RL outer step"),
    (["--learner.inner_steps", "2", "--learner.step_loss_weights", "1"], "learner.step_loss_weights needs"),
    (["--device", "tpu"], "device: unknown device 'tpu'"),
    (["--model.arch", "conv"], "model.arch conv needs image inputs; Sinusoid's are shaped (1,)"),
    (["--model.hidden", "8", "x"], "model.hidden must be a list of integers, got ['8', 'x']"),
    (["--train.dtype", "float16"], "train.dtype must be one of float32, float64; got 'float16'"),
    (["--learner.first_order", "3"], "unexpected argument(s) 3"),
    (["--task.options.wayz", "3", "--task.name", "Omniglot", "--model.arch", "conv"], "task.options.wayz is not an option of Omniglot"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[b[1][:30] for b in BAD])
def test_bad_flags_give_one_line_errors_and_write_nothing(tmp_path, cli, args, message):
    run_dir = tmp_path / "run"
    assert_one_line_error(cli("train.py", *FAST, *args, "--run_dir", str(run_dir)), message)
    assert not run_dir.exists()


def test_cuda_on_a_machine_without_it_is_a_one_line_error(tmp_path, cli):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert_one_line_error(cli("train.py", "--device", "cuda", "--run_dir", str(tmp_path / "r"), "--log.wandb",
                              "disabled"), "CUDA is not available")
    assert not (tmp_path / "r").exists()


def test_bad_files_give_one_line_errors(tmp_path, cli):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  iterationz: 5\n")
    assert_one_line_error(cli("train.py", "--config", str(bad), *FAST), "unknown config key 'train.iterationz'")
    old = tmp_path / "old_rl.yaml"
    old.write_text("env:\n  name: Navigation2D\nalgo:\n  algo: maml_trpo\n")
    assert_one_line_error(cli("train.py", "--config", str(old), *FAST), "old meta-RL config layout")
    assert_one_line_error(cli("train.py", "--config", str(tmp_path / "none.yaml"), *FAST), "config file not found")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert_one_line_error(cli("train.py", "--resume", "--run_dir", str(corrupt), *FAST), "corrupt")
    assert_one_line_error(cli("evaluate.py", "--checkpoint", str(tmp_path / "nope.pt")), "checkpoint not found")
    assert_one_line_error(cli("evaluate.py"), "--checkpoint PATH is required")


def test_a_bad_type_from_a_real_process_is_one_line():
    assert_one_line_error(run("train.py", "--train.iterations", "1.5", *FAST), "train.iterations must be an integer")


def test_task_options_can_be_set_from_the_command_line(tmp_path, cli):
    missing = tmp_path / "no-data-here"
    res = cli("train.py", "--task.name", "Omniglot", "--model.arch", "conv", "--task.options.data_dir", str(missing),
              "--run_dir", str(tmp_path / "r"), *FAST)
    assert_one_line_error(res, str(missing))
    from metarl.run.cli import parse_config

    cfg = parse_config(["--task.name", "omniglot", "--model.arch", "conv", "--task.options.ways", "20",
                        "--task.options.split_by=character"])
    assert cfg.task.options == {"ways": 20, "split_by": "character"}
    # merged into the YAML's options, not replacing them
    cfg = parse_config(["--config", str(ROOT / "configs/omniglot_5way1shot.yaml"), "--task.options.ways", "20"])
    assert cfg.task.options["ways"] == 20 and cfg.task.options["split_by"] == "alphabet"


def test_non_finite_loss_is_reported_with_its_iteration(tmp_path, cli):
    res = cli("train.py", "--outer.lr", "1e20", "--train.iterations", "50", "--train.checkpoint_every", "1",
              "--run_dir", str(tmp_path / "r"), *FAST)
    assert_one_line_error(res, "non-finite loss", "at iteration", "last good checkpoint kept")


def test_a_diverging_evaluation_writes_valid_json_and_says_which_steps(tmp_path, cli):
    run_dir = tmp_path / "run"
    assert cli("train.py", "--train.iterations", "5", "--eval.num_tasks", "20", "--run_dir", str(run_dir), *FAST).returncode == 0
    out = tmp_path / "diverged.json"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = cli("evaluate.py", "--checkpoint", str(run_dir / "checkpoint.pt"), "--learner.inner_lr", "3",
                  "--eval.num_tasks", "20", "--eval.steps", "6", "--out", str(out))
    assert res.returncode == 0, res.stderr

    def no_constants(name):
        raise AssertionError(f"eval.json holds {name}: not JSON")

    summary = json.loads(out.read_text(), parse_constant=no_constants)
    assert summary["loss"]["mean"][0] is not None and summary["loss"]["mean"][-1] is None
    bad = summary["diverged_steps"]["loss"]
    assert bad and bad == sorted(bad) and 6 in bad
    message = " ".join(str(w.message) for w in caught)
    assert "evaluation diverged" in message and ", ".join(map(str, bad)) in message
    assert "diverged" in res.stdout


def test_help_lists_every_field_with_its_doc(cli):
    res = cli("train.py", "--help")
    assert res.returncode == 0
    for flag in ("--learner.first_order", "--train.meta_batch_size", "--eval.num_tasks", "--log.wandb", "--resume",
                 "--outer.max_kl", "--rl.compile_sampler", "--rl.backend", "--task.options.KEY VALUE", "protonet (",
                 "anil (", "trpo ("):
        assert flag in res.stdout, flag
    assert "Drop second-order terms" in res.stdout
    assert cli("evaluate.py", "--help").returncode == 0


def test_readme_commands_are_what_ci_runs():
    readme, ci = (ROOT / "README.md").read_text(), (ROOT / ".ci/run").read_text()
    assert "bash scripts/setup.sh && .venv/bin/python -m pytest" in readme and \
        "bash scripts/setup.sh && .venv/bin/python -m pytest" in ci
    assert "bash scripts/setup.sh && .venv/bin/python scripts/train.py --config configs/sinusoid_maml.yaml" in readme


def test_setup_fails_fast_and_says_what_it_tried_when_no_torch_can_be_installed(tmp_path):
    """No torch anywhere, no local wheel, PyTorch's index unreachable: setup stops within seconds (no minutes of
    retries) and names both attempts with their errors."""
    import os
    import shutil
    import time

    base = getattr(sys, "_base_executable", sys.executable)
    if subprocess.run([base, "-c", "import torch"], capture_output=True).returncode == 0:
        pytest.skip("the base Python has torch: setup would keep it")
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    (tmp_path / "wheels").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "CONDA_PREFIX"))}
    nowhere = "http://127.0.0.1:9/simple"  # connection refused: no index answers
    env.update(PYTHON=base, PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL=nowhere, PIP_FIND_LINKS=str(tmp_path / "wheels"),
               METARL_TORCH_INDEX=nowhere)
    start = time.perf_counter()
    proc = subprocess.run(["bash", str(tmp_path / "scripts" / "setup.sh")], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert time.perf_counter() - start < 120
    assert "could not install a CPU build of torch. Tried:" in proc.stderr
    assert "1. pip install 'torch==2.13.0+cpu'" in proc.stderr and "2. pip install torch --index-url" in proc.stderr
    assert proc.stderr.count("ERROR") >= 2  # each attempt's own error, not hidden
    assert "Connection refused" in proc.stderr or "Failed to establish" in proc.stderr


def test_readme_results_tables_are_generated_from_the_committed_result_files():
    import importlib.util

    spec = importlib.util.spec_from_file_location("results_table", ROOT / "scripts" / "results_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (ROOT / "README.md").read_text()
    block = readme.split(module.START, 1)[1].split(module.END, 1)[0].strip()
    assert block == module.tables().strip(), "README tables differ from results/: run scripts/results_table.py"


def test_mujoco_and_metaworld_tables_read_their_result_files(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("results_table", ROOT / "scripts" / "results_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "ROOT", tmp_path)
    record = {"command": "x", "wall_s": 10.0, "total_wall_s": 7200.0, "machine": {"cpus": 2, "torch": "t"}}
    for where, ret in (("halfcheetah_dir", ([-50.0, 290.0], [5.0, 8.0])), ("ant_dir", ([10.0, 14.0], [3.0, 3.0]))):
        (tmp_path / "results" / where).mkdir(parents=True)
        (tmp_path / "results" / where / "record.json").write_text(json.dumps(record))
        (tmp_path / "results" / where / "eval.json").write_text(json.dumps(
            {"num_tasks": 40, "iteration": 500, "return": {"mean": ret[0], "ci95": ret[1]}}))
    mw = tmp_path / "results" / "metaworld" / "ml1_reach_rl2"
    mw.mkdir(parents=True)
    (mw / "record.json").write_text(json.dumps(record))
    (mw / "eval.json").write_text(json.dumps({"success": {"mean": [0.1, 0.5, 0.6]}}))
    split = lambda m: {"success_mean": m, "success_ci95": 0.05}  # noqa: E731
    (mw / "metaworld_eval.json").write_text(json.dumps({
        "algo": "rl2", "benchmark": "ML1", "env_name": "reach-v3", "iteration": 100, "train": split(0.42), "test": split(0.3),
        "versions": {"metaworld": "3.1.1", "mujoco": "3.3.0", "reward": "v2"},
        "protocol": {"repeats": 50, "meta_batch_size": 0, "adaptation_episodes": 2, "evaluation_episodes": 1,
                     "max_episode_steps": 150}}))
    mujoco = "\n".join(module.mujoco_table())
    assert "| HalfCheetahDir | 500 | 40 | -50.0 ± 5.0, 290.0 ± 8.0 | yes |" in mujoco and "2.0 h" in mujoco
    assert "| AntDir | 500 | 40 | 10.0 ± 3.0, 14.0 ± 3.0 | no |" in mujoco  # 14 - 3 does not clear 10 + 3
    metaworld = "\n".join(module.metaworld_table())
    assert "| RL² | ML1 reach-v3 | reward v2, Meta-World 3.1.1, MuJoCo 3.3.0 | 100 | 10 → 50 → 60 | 42.0 ± 5.0 | 30.0 ± 5.0 |" in metaworld and "120 + 0 min" in metaworld
    assert "50 repeats (goals) × one sub-env per skill, 2 adaptation + 1 evaluation episodes of 150 steps" in metaworld
    assert "| MAML-TRPO (published) | ML10 |" in metaworld
    # neither lands in the generic table of commands
    assert "halfcheetah_dir" not in module.tables().split("| command |", 1)[1]


def test_record_of_a_resumed_runs_last_segment_adds_the_earlier_segments_training_time(tmp_path):
    from metarl.run.checkpoint import save_checkpoint

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_checkpoint(run_dir / "checkpoint.pt", {"format": 2, "meta_params": {}, "config": {}, "elapsed_s": 1000.0})
    (run_dir / "learning_curve.png").write_bytes(b"png")
    # the recorded command: a stand-in for `train.py ... --resume` printing a JSON last line
    cmd = [sys.executable, "-c", "import time; time.sleep(0.2); print('{\"x\": 1}')", "--resume"]
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "record.py"), "--name", "r", "--run_dir", str(run_dir),
                           "--results", str(tmp_path / "results"), "--", *cmd], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "results" / "r" / "record.json").read_text())
    assert record["earlier_segments_training_s"] == 1000.0 and record["figures"] == {"x": 1}
    assert 1000.2 <= record["total_wall_s"] == round(record["wall_s"] + 1000.0, 1) < 1030
    assert (tmp_path / "results" / "r" / "learning_curve.png").read_bytes() == b"png"
