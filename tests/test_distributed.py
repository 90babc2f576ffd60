"""torch.distributed over the task batch, for every family: W ranks split one batch and end with the parameters
one process reaches on the same batch; torchrun launches the ordinary training script."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from test_trainer import rl_config, small_config

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _configs(tmp):
    sup = small_config(tmp / "sup", iterations=4, meta_batch_size=6, checkpoint_every=2)
    rl = rl_config(tmp / "rl", "trpo", iterations=2)
    # TRPO's conjugate gradient on the barely damped KL Hessian amplifies rounding differences (another
    # summation order of the same mean) by orders of magnitude: compare in float64 with a damping that
    # keeps the solve well conditioned
    rl.train.meta_batch_size, rl.train.dtype, rl.outer.cg_damping = 4, "float64", 0.1
    return sup, rl


def _rank_main(rank, world, port, tmp, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from metarl.run.trainer import Trainer

    for name, cfg in zip(("sup", "rl"), _configs(Path(tmp))):
        trainer = Trainer(cfg)
        trainer.run()
        torch.save(trainer.flat.clone(), os.path.join(out, f"{name}{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_two_ranks_equal_one_process_on_the_same_task_batch(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    mp.start_processes(_rank_main, args=(2, _free_port(), str(tmp_path / "dist"), str(out)), nprocs=2,
                       start_method="spawn")
    from metarl.run.trainer import Trainer

    for name, cfg in zip(("sup", "rl"), _configs(tmp_path / "single")):
        r0, r1 = (torch.load(out / f"{name}{r}.pt") for r in (0, 1))
        assert torch.equal(r0, r1), name  # every rank takes the same step
        single = Trainer(cfg)
        single.run()
        # the gradients are means over the same tasks, summed in another order: equal up to rounding
        torch.testing.assert_close(r0, single.flat, rtol=1e-6, atol=1e-6, msg=name)
        assert not torch.equal(single.flat, Trainer(cfg).flat)  # (training moved the parameters)
    assert (tmp_path / "dist" / "rl" / "checkpoint.pt").exists() and (tmp_path / "dist" / "rl" / "eval.json").exists()


#: every shipped config family, made tiny (its outer step, curvature subsample and minibatches as shipped), in
#: float64: under 2 ranks it must end where one process does
TINY = ("--train.dtype", "float64", "--train.log_every", "1", "--train.checkpoint_every", "1", "--train.eval_every", "0",
        "--eval.num_tasks", "2", "--eval.steps", "1", "--log.wandb", "disabled", "--log.no_progress", "--log.no_console",
        "--device", "cpu")
TINY_RL = ("--task.horizon", "20", "--rl.episodes_per_task", "10", "--eval.episodes_per_task", "2", "--model.hidden", "8", "8")
SHIPPED = {
    "sinusoid_maml": ("configs/sinusoid_maml.yaml", "--train.iterations", "3", "--train.meta_batch_size", "6"),
    # hvp_task_fraction 0.25: tasks 0, 2, 5, 7 of the 8; the shipped network and horizon (a tiny policy's KL
    # Hessian is so ill-conditioned that CG with the shipped damping turns rounding into 1e-3 parameter changes)
    "nav2d_maml_trpo": ("configs/nav2d_maml_trpo.yaml", "--train.iterations", "2", "--train.meta_batch_size", "8",
                        "--train.time_limit_s", "0", "--rl.episodes_per_task", "10", "--eval.episodes_per_task", "2"),
    "nav2d_maml_ppo": ("configs/nav2d_maml_ppo.yaml", "--train.iterations", "2", "--train.meta_batch_size", "6", *TINY_RL),
    "nav2d_reptile": ("configs/nav2d_reptile.yaml", "--train.iterations", "2", "--train.meta_batch_size", "6", *TINY_RL),
    "nav2d_rl2": ("configs/nav2d_rl2.yaml", "--train.iterations", "2", "--train.meta_batch_size", "8",  # 4 minibatches
                  "--task.horizon", "8", "--rl.episodes_per_task", "2", "--eval.episodes_per_task", "2", "--model.hidden", "8"),
    "halfcheetah_vel_maml_trpo": ("configs/halfcheetah_vel_maml_trpo.yaml", "--train.iterations", "2",  # Gauss-Newton
                                  "--train.meta_batch_size", "4", "--train.time_limit_s", "0", *TINY_RL),  # on 1 of 10 episodes
}


#: Meta-World (the optional extra): ML1 and ML10, whose ranks hold whole skills (ML10: skills 0-4 and 5-9)
METAWORLD = {
    "metaworld_ml1_reach_maml_trpo": ("configs/metaworld_ml1_reach_maml_trpo.yaml", "--train.iterations", "2",
                                      "--train.meta_batch_size", "4", "--task.horizon", "10", "--rl.episodes_per_task",
                                      "3", "--eval.episodes_per_task", "1"),
    "metaworld_ml10_maml_trpo": ("configs/metaworld_ml10_maml_trpo.yaml", "--train.iterations", "2",
                                 "--train.meta_batch_size", "10", "--task.horizon", "10", "--rl.episodes_per_task", "2",
                                 "--eval.episodes_per_task", "1", "--eval.num_tasks", "5"),
}
SHIPPED.update(METAWORLD)


def _shipped(name: str, run_dir: Path):
    from metarl.run.cli import parse_config

    config, *overrides = SHIPPED[name]
    return parse_config(["--config", config, *TINY, *overrides, "--run_dir", str(run_dir)])


def _train_shipped(rank, world, port, tmp, names):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from metarl.run.trainer import Trainer

    for name in names:
        trainer = Trainer(_shipped(name, Path(tmp) / name))
        trainer.run()
        torch.save({"flat": trainer.flat.clone(), "env_steps": trainer.env_steps}, Path(tmp) / f"{name}.rank{rank}.pt")
    torch.distributed.destroy_process_group()


def _logged(run_dir: Path) -> list[dict]:
    import json

    return [{k: v for k, v in json.loads(line).items() if k.startswith("train/")}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"train/' in line]


def test_every_shipped_config_family_ends_where_one_process_does_under_two_ranks(tmp_path):
    """Parameters, environment steps and the logged training metrics (means over all ranks' tasks) equal one
    process's on the same task batches, with the shipped curvature subsamples and PPO minibatches (both chosen
    among the whole batch's tasks, not each rank's share)."""
    pytest.importorskip("mujoco")
    names = [n for n in SHIPPED if n not in METAWORLD]
    _compare_two_ranks_with_one_process(names, tmp_path)


def test_meta_world_ranks_collect_and_compute_what_one_process_does(tmp_path):
    """Each rank's vector env holds its tasks' skills (ML10: 0-4 and 5-9) and seeds its sub-envs as one process
    would: the rollouts, meta-gradient and line-search checks logged equal one process's. Short episodes: over
    long ones Meta-World's contacts turn rounding (a policy evaluated on 2 tasks instead of 4) into visible
    differences, and these steps are then rejected, so the parameters are not compared after a move."""
    pytest.importorskip("metaworld")
    _compare_two_ranks_with_one_process(list(METAWORLD), tmp_path, moved=False)


def _compare_two_ranks_with_one_process(names, tmp_path, moved=True):
    mp.start_processes(_train_shipped, args=(2, _free_port(), str(tmp_path / "dist"), names), nprocs=2,
                       start_method="spawn")
    from metarl.run.trainer import Trainer

    for name in names:
        r0, r1 = (torch.load(tmp_path / "dist" / f"{name}.rank{r}.pt") for r in (0, 1))
        assert torch.equal(r0["flat"], r1["flat"]), name  # every rank takes the same step
        single = Trainer(_shipped(name, tmp_path / "single" / name))
        single.run()
        torch.testing.assert_close(r0["flat"], single.flat, rtol=1e-8, atol=1e-9, msg=lambda m: f"{name}: {m}")
        if moved:
            assert not torch.equal(single.flat, Trainer(_shipped(name, tmp_path / "fresh" / name)).flat), name
        assert r0["env_steps"] == r1["env_steps"] == single.env_steps, name
        dist_log, single_log = _logged(tmp_path / "dist" / name), _logged(tmp_path / "single" / name)
        assert [sorted(r) for r in dist_log] == [sorted(r) for r in single_log] and dist_log, name
        for a, b in zip(dist_log, single_log):
            for k in a:
                # the adapted policies agree to rounding (tasks vmapped 2 at a time, not 4), which contact dynamics
                # amplify in their episodes (~1e-5 on MKL's AVX-512 kernels): so in the returns after adaptation and
                # the outer gradient taken on them; a rank-local mean would differ by percents
                rel = 1e-4 if k.endswith("_post") or k == "train/grad_norm" else 1e-8
                assert a[k] == pytest.approx(b[k], rel=rel, abs=1e-10), (name, k, a[k], b[k])


def test_torchrun_launches_the_meta_rl_config_on_cpu(tmp_path):
    args = ["--config", "configs/nav2d_maml_trpo.yaml", "--train.iterations", "2", "--task.horizon", "10",
            "--rl.episodes_per_task", "3", "--train.meta_batch_size", "4", "--eval.num_tasks", "4",
            "--eval.episodes_per_task", "2", "--log.wandb", "disabled", "--log.no_progress", "--device", "auto",
            "--run_dir", str(tmp_path / "run")]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(_free_port()), "scripts/train.py", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "held-out evaluation" in proc.stdout and (tmp_path / "run" / "eval.json").is_file()


NAV_TINY = ["--config", "configs/nav2d_maml_trpo.yaml", "--train.meta_batch_size", "4", "--train.time_limit_s", "0",
            *TINY, *TINY_RL]
SINUSOID_TINY = ["--config", "configs/sinusoid_maml.yaml", "--train.iterations", "4", "--train.meta_batch_size", "6", *TINY]


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def _final_params(run_dir: Path) -> torch.Tensor:
    from metarl.run.checkpoint import load_checkpoint

    meta = load_checkpoint(run_dir)["meta_params"]
    return torch.cat([v.reshape(-1) for g in sorted(meta) for _, v in sorted(meta[g].items())])


def _single(args: list[str], run_dir: Path) -> torch.Tensor:
    proc = subprocess.run([sys.executable, "scripts/train.py", *args, "--run_dir", str(run_dir)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _final_params(run_dir)


def test_two_nodes_of_one_process_each_end_where_one_process_does(tmp_path):
    """Two torchrun agents (two "machines" on localhost) meet at a c10d rendezvous and train one run on a shared
    directory; the meta-RL and the supervised config end with one process's parameters."""
    for name, args in (("nav2d", [*NAV_TINY, "--train.iterations", "2"]), ("sinusoid", SINUSOID_TINY)):
        port, run_dir = _free_port(), tmp_path / "nodes" / name
        agents = [subprocess.Popen(_torchrun("--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d",
                                             "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", f"metarl-{name}",
                                             "--rdzv_conf", f"is_host={int(node == 0)}",
                                             "scripts/train.py", *args, "--run_dir", str(run_dir)),
                                   cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env={**os.environ, "OMP_NUM_THREADS": "1"}) for node in (0, 1)]
        outs = [a.communicate(timeout=300) for a in agents]
        for agent, (out, err) in zip(agents, outs):
            assert agent.returncode == 0, err[-3000:]
        assert sum("held-out evaluation" in out for out, _ in outs) == 1  # rank 0 evaluates, on one of the nodes
        torch.testing.assert_close(_final_params(run_dir), _single(args, tmp_path / "single" / name),
                                   rtol=1e-9, atol=1e-9, msg=name)


def _worker_pid(run_id: str, rank: int, timeout: float = 120.0) -> int:
    """The pid of the torchrun worker of launch `run_id` with this RANK."""
    import time

    want = {f"TORCHELASTIC_RUN_ID={run_id}".encode(), f"RANK={rank}".encode()}
    end = time.time() + timeout
    while time.time() < end:
        for pid in (p for p in os.listdir("/proc") if p.isdigit()):
            try:
                env = set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
            except OSError:
                continue
            if want <= env:
                return int(pid)
        time.sleep(0.05)
    raise AssertionError(f"no worker of rank {rank} in launch {run_id}")


def _wait_for_checkpoint(run_dir: Path, iteration: int, proc, timeout: float = 120.0) -> None:
    import time

    from metarl.core.errors import CheckpointError
    from metarl.run.checkpoint import load_checkpoint

    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        try:
            if load_checkpoint(run_dir)["iteration"] >= iteration:
                return
        except CheckpointError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint of iteration {iteration} in {run_dir} (torchrun returned {proc.poll()})")


def _launch_two(args: list[str], run_dir: Path, run_id: str, *extra: str):
    return subprocess.Popen(_torchrun("--nnodes", "1", "--nproc_per_node", "2", "--rdzv_backend", "c10d",
                                      "--rdzv_endpoint", f"127.0.0.1:{_free_port()}", "--rdzv_id", run_id, *extra,
                                      "scripts/train.py", *args, "--run_dir", str(run_dir)),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_worker_killed_mid_run_restarts_the_group_which_resumes_and_ends_where_an_uninterrupted_run_does(tmp_path):
    import signal

    args = [*NAV_TINY, "--train.iterations", "60"]
    proc = _launch_two(args, tmp_path / "run", "metarl-kill", "--max-restarts", "1")
    _wait_for_checkpoint(tmp_path / "run", 3, proc)
    os.kill(_worker_pid("metarl-kill", 1), signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "held-out evaluation" in out and (tmp_path / "run" / "eval.json").is_file()
    assert "exitcode: -9" in err  # torchrun saw the worker killed, and the job still ended well: it restarted...
    uninterrupted = _launch_two(args, tmp_path / "uninterrupted", "metarl-whole")
    _, err = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, err[-3000:]
    # ...and the restarted group resumed from the checkpoint: the same numbers as a run never interrupted
    assert torch.equal(_final_params(tmp_path / "run"), _final_params(tmp_path / "uninterrupted"))


def test_a_hung_rank_ends_the_run_with_one_line_naming_it_and_the_iteration(tmp_path):
    import re
    import signal
    import time

    proc = _launch_two([*NAV_TINY, "--train.iterations", "400", "--train.dist_timeout_s", "5"], tmp_path / "run",
                       "metarl-hang")
    _wait_for_checkpoint(tmp_path / "run", 2, proc)
    hung, rank0 = _worker_pid("metarl-hang", 1), _worker_pid("metarl-hang", 0)
    os.kill(hung, signal.SIGSTOP)
    start = time.time()
    try:
        while Path(f"/proc/{rank0}").exists() and time.time() - start < 60:
            time.sleep(0.1)
        waited = time.time() - start
    finally:
        os.kill(hung, signal.SIGCONT)  # let the stopped rank take torchrun's SIGTERM
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and waited < 30, (waited, err[-2000:])
    line = next(l for l in err.splitlines() if l.startswith("error: rank 0"))
    assert re.search(r"rank 0, iteration \d+: all_reduce #\d+ failed after waiting at most 5 s: rank 1 (did not reach it|"
                     r"stopped responding)",
                     line), line


def test_sigterm_to_torchrun_stops_every_rank_after_the_same_iteration_with_its_checkpoint(tmp_path):
    """A scheduler's preemption: torchrun passes SIGTERM on to its workers, which finish the iteration and stop
    together with its checkpoint (none is due before iteration 1000: without the clean stop there would be none)."""
    import json
    import signal
    import time

    args = [*NAV_TINY, "--train.iterations", "100000", "--train.checkpoint_every", "1000"]
    proc = _launch_two(args, tmp_path / "run", "metarl-term")
    metrics, deadline = tmp_path / "run" / "metrics.jsonl", time.time() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 3) and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    from metarl.run.checkpoint import load_checkpoint

    logged = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert load_checkpoint(tmp_path / "run")["iteration"] == logged[-1] >= 3, err[-3000:]
    # both ranks got it and stopped (torchrun returned); rank 0 alone says so
    assert err.count(f"stopped at iteration {logged[-1]} on SIGTERM") == 1, err[-3000:]
    assert (out + err).count("SIGTERM: stopping after this iteration") == 1, (out + err)[-3000:]


def _run_and_note_the_exit(rank, world, port, tmp):
    import time

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from metarl.run.trainer import run

    run(_shipped("sinusoid_maml", Path(tmp) / "run"))
    (Path(tmp) / f"left{rank}").write_text(repr(time.time()))


def test_no_rank_leaves_before_rank_0_has_written_the_checkpoint_and_the_evaluation(tmp_path):
    """The end-of-run abort: ranks other than 0 used to return as soon as the last iteration was done and exit
    while rank 0 still evaluated, tearing down their end of the process group under it (1 in 18 torchrun runs
    aborted, and torchrun killed rank 0 before it wrote its checkpoint). Every rank now leaves together, after
    rank 0's writes."""
    mp.start_processes(_run_and_note_the_exit, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    written = max((tmp_path / "run" / f).stat().st_mtime for f in ("checkpoint.pt", "eval.json", "learning_curve.png"))
    assert float((tmp_path / "left1").read_text()) >= written
