"""torch.distributed data parallelism: two ranks, different tasks, one shared set of meta-parameters."""
import os
import socket

import torch
import torch.multiprocessing as mp

from test_trainer import small_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, tmp, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from metarl.trainer import Trainer

    cfg = small_config(tmp, iterations=6)
    trainer = Trainer(cfg)
    trainer.run()
    torch.save({k: v.clone() for k, v in trainer.meta["theta"].items()}, os.path.join(out, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_two_ranks_stay_identical_and_differ_from_one_rank(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    mp.start_processes(_rank_main, args=(2, _free_port(), tmp_path / "dist", str(out)), nprocs=2, start_method="spawn")
    r0, r1 = (torch.load(out / f"rank{r}.pt") for r in (0, 1))
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    from metarl.trainer import Trainer

    single = Trainer(small_config(tmp_path / "single", iterations=6))
    single.run()
    # rank 0 alone sees the same tasks as the single run; averaging in rank 1's gradients changes the result
    assert not torch.equal(single.meta["theta"]["0.weight"], r0["0.weight"])
    assert (tmp_path / "dist" / "run" / "checkpoint.pt").exists()
