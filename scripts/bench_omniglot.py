"""Speed of one second-order MAML meta-iteration on Omniglot 5-way 1-shot (32 tasks, conv learner).

Every contender does the same work per iteration: sample an episode (32 tasks, 1 support and 15 query drawings
per class), compute the second-order meta-gradient of one inner step (alpha = 0.4), and take an Adam step.
  loop / vmap / chunks / threads   metarl's MAML learner with each train.task_batching (one task at a time
                         with plain convolutions; one vmapped call; vmapped groups of 8; the loop with one
                         task per core side by side)
  plain_loop             a per-task Python loop: torch's conv2d / batch_norm / max_pool2d and
                         torch.autograd.grad(create_graph=True) for the inner step, one backward for the outer loss
Timed in interleaved rounds. The last line is one JSON object: seconds per iteration of each, each strategy's
speed-up over plain_loop, and speedup_vs_loop: that of the strategy train.task_batching auto picks here.

With --memory, also the peak memory of one meta-gradient of 20-way 1-shot MAML with 5 inner steps (one task
at a time; CPU: growth of the peak resident set of a fresh subprocess whose large blocks are unmapped when
freed, GPU: torch.cuda.max_memory_allocated) and its time, for the plain second-order path,
train.recompute_inner_steps and first-order MAML.

    python scripts/bench_omniglot.py [--device cpu] [--tasks 32] [--repeats 5] [--rounds 3] [--memory]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from envs.omniglot import OmniglotTasks  # noqa: E402
from metarl.nets.convnet import ConvNet, reference_forward  # noqa: E402
from metarl.algorithms.maml import MAML  # noqa: E402
from metarl.core.executor import TaskExecutor  # noqa: E402
from metarl.nets import parameters_of  # noqa: E402
from metarl.supervised.objective import SupervisedObjective  # noqa: E402

WAYS, SHOTS, QUERY, INNER_LR = 5, 1, 15, 0.4


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(step, repeats: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]  # median: robust to a neighbour's burst of load


def run_omniglot_case(device: str = "cpu", tasks: int = 32, repeats: int = 5, warmup: int = 1,
                      dist: OmniglotTasks | None = None, rounds: int = 3) -> dict:
    dev = torch.device(device)
    dist = dist or OmniglotTasks(ways=WAYS)
    init = parameters_of(ConvNet(1, WAYS, generator=torch.Generator().manual_seed(0)), device=dev)
    auto = auto_batching(dev)

    def metarl_step(batching: str):
        """metarl's MAML learner with one task batching (plain convolutions one task at a time, as build sets up)."""
        model = ConvNet(1, WAYS, layout="nchw" if batching in ("loop", "threads") else "channels_last").to(dev)
        learner = MAML(SupervisedObjective(model, "cross_entropy"), init, inner_lr=INNER_LR, inner_steps=1,
                       executor=TaskExecutor(batching, chunk_size=8))
        meta = learner.init_meta_params()
        leaves = [t.requires_grad_() for g in meta.values() for t in g.values()]
        opt = torch.optim.Adam(leaves, lr=1e-3)
        gen = torch.Generator().manual_seed(1)

        def step():
            ep = dist.sample_episode(tasks, SHOTS, QUERY, gen).to(dev)
            grads, loss, _ = learner.meta_gradient(meta, ep.support, ep.query)
            for group in meta:
                for k, t in meta[group].items():
                    t.grad = grads[group][k]
            opt.step()

        return step

    # the baseline: one task at a time, plain autograd
    theta = {k: v.clone().requires_grad_() for k, v in init.items()}
    opt_l = torch.optim.Adam(list(theta.values()), lr=1e-3)
    gen_l = torch.Generator().manual_seed(1)

    def loop_step():
        ep = dist.sample_episode(tasks, SHOTS, QUERY, gen_l).to(dev)
        opt_l.zero_grad()
        names = list(theta)
        for i in range(tasks):
            (sx, sy), (qx, qy) = (ep.support[0][i], ep.support[1][i]), (ep.query[0][i], ep.query[1][i])
            inner = F.cross_entropy(reference_forward(theta, sx), sy)
            g = torch.autograd.grad(inner, [theta[k] for k in names], create_graph=True)
            fast = {k: theta[k] - INNER_LR * gk for k, gk in zip(names, g)}
            (F.cross_entropy(reference_forward(fast, qx), qy) / tasks).backward()
        opt_l.step()

    strategies = ("loop", "vmap", "chunks", "threads")
    steps = {"plain_loop": loop_step, **{b: metarl_step(b) for b in strategies}}
    seconds: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(rounds):  # interleaved: a drifting machine load hits every contender alike
        for name, step in steps.items():
            seconds[name].append(_time(step, repeats, warmup, dev))
    med = {k: sorted(v)[len(v) // 2] for k, v in seconds.items()}
    ratio = lambda b: sorted(p / m for p, m in zip(seconds["plain_loop"], seconds[b]))[rounds // 2]  # noqa: E731
    return {
        "case": "omniglot_5way_1shot", "device": str(dev), "tasks": tasks, "query_per_class": QUERY,
        "second_order": True, "threads": torch.get_num_threads(), "auto": auto,
        **{f"{b}_s_per_iter": round(med[b], 4) for b in steps},
        **{f"{b}_speedup_vs_loop": round(ratio(b), 3) for b in strategies},
        "speedup_vs_loop": round(ratio(auto), 3),
        "episodes_per_s": round(tasks / med[auto], 2),
    }


def auto_batching(dev: torch.device) -> str:
    """What train.task_batching auto picks for a conv net on this device (metarl.run.build)."""
    from metarl.run.build import task_batching
    from metarl.run.config import Config, from_dict

    return task_batching(from_dict(Config, {"task": {"name": "Omniglot"}, "model": {"arch": "conv"}}), dev)


def _memory_child(device: str, mode: str, ways: int, steps: int, tasks: int, query: int, channels: int,
                  measure: str, batching: str = "loop") -> dict:
    """One meta-gradient of `tasks` synthetic ways-way 1-shot tasks (`batching`): its peak memory in MB above
    what the process held before it, after a warm-up one (measure "memory"), or the median seconds of three
    (measure "time")."""
    dev = torch.device(device)
    model = ConvNet(1, ways, channels=channels, layout="nchw" if batching in ("loop", "threads") else "channels_last")
    learner = MAML(SupervisedObjective(model.to(dev), "cross_entropy"), parameters_of(model, device=dev),
                   inner_lr=0.1, inner_steps=steps, first_order=mode == "first_order",
                   executor=TaskExecutor(batching, recompute=mode == "recompute"))
    gen = torch.Generator().manual_seed(0)
    images = lambda n: torch.rand(tasks, n, 1, 28, 28, generator=gen).to(dev)  # noqa: E731
    labels = lambda n: torch.arange(ways).repeat(n // ways).expand(tasks, -1).to(dev)  # noqa: E731
    support, query_data = (images(ways), labels(ways)), (images(ways * query), labels(ways * query))
    meta = learner.init_meta_params()
    if measure == "time":
        return {"s_per_iter": round(_time(lambda: learner.meta_gradient(meta, support, query_data), 3, 1, dev), 4)}
    learner.meta_gradient(meta, support, query_data)  # warm-up: allocator and kernel caches are not the graph
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        learner.meta_gradient(meta, support, query_data)
        torch.cuda.synchronize(dev)
        return {"peak_mb": round((torch.cuda.max_memory_allocated(dev) - base) / 2**20, 1)}
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # peak resident set := current (Linux >= 4.0)
    base = _status_mb("VmRSS")
    learner.meta_gradient(meta, support, query_data)
    return {"peak_mb": round(_status_mb("VmHWM") - base, 1)}


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def peak_memory(device: str = "cpu", mode: str = "second_order", ways: int = 20, steps: int = 5, tasks: int = 4,
                query: int = 5, channels: int = 64, measure: str = "memory", batching: str = "loop") -> dict:
    """_memory_child in a fresh interpreter (one meta-gradient alone in its resident set)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", json.dumps(
        {"device": device, "mode": mode, "ways": ways, "steps": steps, "tasks": tasks, "query": query,
         "channels": channels, "measure": measure, "batching": batching})]
    env = dict(os.environ)
    if measure == "memory":  # every block over 64 KB its own mapping, unmapped when freed: RSS = live memory
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_memory_case(device: str = "cpu", ways: int = 20, steps: int = 5, tasks: int = 4, query: int = 5,
                    strategies_tasks: int = 32) -> dict:
    """Peak memory of each task batching (5-way 1-shot, 1 step, 15 queries per class, strategies_tasks tasks),
    then plain / recomputed / first-order 20-way 1-shot MAML with 5 steps, one task at a time."""
    per_strategy = {f"{b}_peak_mb": peak_memory(device, "second_order", WAYS, 1, strategies_tasks, QUERY,
                                                batching=b)["peak_mb"] for b in ("loop", "vmap", "chunks", "threads")}
    res = {m: {**peak_memory(device, m, ways, steps, tasks, query),
               **peak_memory(device, m, ways, steps, tasks, query, measure="time")}
           for m in ("second_order", "recompute", "first_order")}
    so, rc, fo = res["second_order"], res["recompute"], res["first_order"]
    return {**per_strategy, "memory_case": f"omniglot_{ways}way_1shot_{steps}steps", "memory_tasks": tasks,
            "memory_query_per_class": query,
            **{f"{m}_peak_mb": r["peak_mb"] for m, r in res.items()},
            **{f"{m}_memory_s_per_iter": r["s_per_iter"] for m, r in res.items()},
            "recompute_memory_vs_second_order": round(rc["peak_mb"] / so["peak_mb"], 3),
            "recompute_memory_vs_first_order": round(rc["peak_mb"] / fo["peak_mb"], 3),
            "recompute_time_vs_first_order": round(rc["s_per_iter"] / fo["s_per_iter"], 3),
            "recompute_time_vs_second_order": round(rc["s_per_iter"] / so["s_per_iter"], 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tasks", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--memory", action="store_true", help="also peak memory per strategy and of 20-way 5-step "
                    "MAML plain / recomputed / first order")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        print(json.dumps(_memory_child(**json.loads(args.memory_child))))
        return
    result = run_omniglot_case(args.device, args.tasks, args.repeats, rounds=args.rounds)
    if args.memory:
        result.update(run_memory_case(args.device))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
