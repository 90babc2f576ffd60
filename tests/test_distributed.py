"""torch.distributed over the task batch, for every family: W ranks split one batch and end with the parameters
one process reaches on the same batch; torchrun launches the ordinary training script."""
import os
import socket
import subprocess
import sys
from pathlib import Path

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
