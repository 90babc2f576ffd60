"""torch.distributed data parallelism over the task batch (launch with torchrun: one machine or several), for every
task family.

Every rank draws the same batch of B tasks and keeps its share (metarl.core.source); what the outer step
computes from its tasks -- meta-gradients, losses, TRPO's Hessian-vector products, line-search checks, the
logged metrics -- is a mean over them, so `Reducer` turns it into the mean over all B tasks with one all_reduce:
each rank contributes share * its mean. Every rank then takes the same step and the meta-parameters stay
identical. Only these reductions cross the network; each rank steps its own sub-environments.

Failures: every collective waits at most `timeout_s` (train.dist_timeout_s). A rank that does not answer in time
stops the others with one line naming it and the iteration (each rank notes in the rendezvous store how many
collectives it has entered, so the ones behind are known, and notes a collective that failed on it, so a rank
inside the same collective that never reports its failure -- stopped, frozen or dead -- is known too); a rank
that dies ends the group at once, and under `torchrun --max-restarts K` the group restarts and resumes from the
last checkpoint (metarl.run.trainer).
"""
from __future__ import annotations

import os
import time
from datetime import timedelta

import torch
import torch.distributed as dist

from metarl.core.errors import DistributedError


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def restarted() -> bool:
    """Whether torchrun restarted this worker group after a failure (`--max-restarts`)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


class Group:
    """This process among the ranks of a torchrun launch (one process: rank 0 of 1, every collective the identity).
    The default process group is initialised here: gloo for CPU tensors, nccl for CUDA ones."""

    def __init__(self, device: torch.device, timeout_s: float = 1800.0):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank, self.timeout_s = 0, float(timeout_s)
        self.device = device  # collectives of small host values go through a tensor here (nccl needs CUDA ones)
        self.iteration = 0  # the iteration being computed, for error messages (set by the trainer)
        self._entered = 0
        self.collective_s = 0.0  # seconds spent in collectives (waiting for the slowest rank included)
        self._store = None
        # keys of this launch and restart only (torchrun's store outlives a restarted group)
        self._prefix = (f"metarl/{os.environ.get('TORCHELASTIC_RUN_ID', '')}/"
                        f"{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/")
        if self.world <= 1:
            return
        if not dist.is_initialized():
            backend, timeout = ("nccl" if device.type == "cuda" else "gloo"), timedelta(seconds=self.timeout_s)
            if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
                # torchrun's c10d rendezvous shares one store server across restarts of the group, and the default
                # env:// init uses it without a per-attempt prefix: a restarted group could read the addresses of
                # the workers it replaced and fail to connect. Each attempt gets its own keys here.
                store = dist.PrefixStore(f"metarl/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/",
                                         dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                                                       is_master=False, timeout=timeout))
                dist.init_process_group(backend, store=store, rank=int(os.environ["RANK"]), world_size=self.world,
                                        timeout=timeout)
            else:
                dist.init_process_group(backend, timeout=timeout)
        self.rank = dist.get_rank()
        try:  # a client of the rendezvous store (torchrun's, or rank 0's), for the progress notes
            self._store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                                        timeout=timedelta(seconds=30))
        except (KeyError, RuntimeError, ValueError):
            self._store = None

    def reducer(self, share: float) -> "Reducer":
        return Reducer(share, self)

    def total(self, x: float) -> float:
        """The sum of x over ranks."""
        if self.world <= 1:
            return x
        t = torch.tensor([x], dtype=torch.float64, device=self.device)
        self.collective("all_reduce", dist.all_reduce, t)
        return float(t)

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on any (e.g. a time limit reached): ranks stop together."""
        if self.world <= 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        self.collective("all_reduce", dist.all_reduce, t, op=dist.ReduceOp.MAX)
        return bool(t > 0)

    def barrier(self) -> None:
        if self.world > 1:
            self.collective("barrier", dist.barrier)

    def close(self) -> None:
        """Wait until every rank is done (rank 0 writes the final checkpoint and evaluation meanwhile), then
        take the group down in order: no rank exits while another still talks to it."""
        if self.world > 1 and dist.is_initialized():
            self.barrier()
            dist.destroy_process_group()

    def collective(self, name: str, fn, *args, **kwargs):
        """fn(*args, **kwargs), a collective every rank enters in the same order; a failure (a rank that did not
        answer within the timeout, or that died) is a DistributedError naming the ranks behind."""
        self._entered += 1
        self._note(str(self._entered))
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # gloo / nccl raise RuntimeError subclasses with multi-line messages
            self._note(str(self._entered), "failed")
            behind = self._behind()
            silent = [] if behind else self._silent()  # inside this collective, and no failure reported from there
            ranks = lambda rs: f"rank{'s' if len(rs) > 1 else ''} {', '.join(map(str, rs))}"  # noqa: E731
            who = (f"{ranks(behind)} did not reach it" if behind else
                   f"{ranks(silent)} stopped responding" if silent else "another rank failed")
            raise DistributedError(
                f"rank {self.rank}, iteration {self.iteration}: {name} #{self._entered} failed after waiting at most "
                f"{self.timeout_s:g} s: {who} ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}); "
                "the last checkpoint is kept (continue with --resume, or run under torchrun --max-restarts)") from None
        finally:
            self.collective_s += time.perf_counter() - start

    def _note(self, value: str, what: str = "entered") -> None:
        if self._store is not None:
            try:
                self._store.set(f"{self._prefix}{what}/{self.rank}", value)
            except Exception:  # progress notes are for error messages only
                self._store = None

    def _behind(self) -> list[int]:
        """The ranks that entered fewer collectives than this one (read from the store; [] when unknown)."""
        if self._store is None:
            return []
        behind = []
        for r in range(self.world):
            key = f"{self._prefix}entered/{r}"
            try:
                n = int(self._store.get(key)) if self._store.check([key]) else 0
            except Exception:
                return []
            if n < self._entered:
                behind.append(r)
        return behind

    def _silent(self, wait_s: float = 3.0) -> list[int]:
        """The other ranks that did not report this collective failing within `wait_s` seconds ([] when unknown):
        a live rank inside it fails too (its own timeout, or the connection this rank's error closes)."""
        if self._store is None:
            return []
        keys = {r: f"{self._prefix}failed/{r}" for r in range(self.world) if r != self.rank}
        deadline = time.monotonic() + wait_s
        try:
            while True:
                silent = [r for r, k in keys.items()
                          if not (self._store.check([k]) and int(self._store.get(k)) >= self._entered)]
                if not silent or time.monotonic() > deadline:
                    return silent
                time.sleep(0.1)
        except Exception:
            return []


class Reducer:
    """reduce(*tensors) -> the same tensors, each the share-weighted sum over ranks (one all_reduce); `share=`
    overrides this rank's weight (e.g. the fraction of a task subsample that this rank holds)."""

    def __init__(self, share: float, group: Group | None = None):
        self.share, self.group = share, group

    def __call__(self, *tensors: torch.Tensor, share: float | None = None) -> list[torch.Tensor]:
        if self.group is None or self.group.world <= 1:
            return list(tensors)
        w = self.share if share is None else share
        flat = torch.cat([t.detach().reshape(-1).to(tensors[0].dtype) for t in tensors]) * w
        self.group.collective("all_reduce", dist.all_reduce, flat)
        out, offset = [], 0
        for t in tensors:
            out.append(flat[offset : offset + t.numel()].view_as(t).to(t.dtype))
            offset += t.numel()
        return out
