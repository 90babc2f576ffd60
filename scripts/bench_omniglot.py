"""Speed of one second-order MAML meta-iteration on Omniglot 5-way 1-shot (32 tasks, conv learner).

Every contender does the same work per iteration: sample an episode (32 tasks, 1 support and 15 query drawings
per class), compute the second-order meta-gradient of one inner step (alpha = 0.4), and take an Adam step.
  loop / vmap / chunks   metarl's MAML learner with each train.task_batching (one task at a time with plain
                         convolutions; one vmapped call; vmapped groups of 8)
  plain_loop             a per-task Python loop: torch's conv2d / batch_norm / max_pool2d and
                         torch.autograd.grad(create_graph=True) for the inner step, one backward for the outer loss
Timed in interleaved rounds. The last line is one JSON object: seconds per iteration of each, each strategy's
speed-up over plain_loop, and speedup_vs_loop: that of the strategy train.task_batching auto picks here.

    python scripts/bench_omniglot.py [--device cpu] [--tasks 32] [--repeats 5] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from envs.omniglot import OmniglotTasks  # noqa: E402
from metarl.convnet import ConvNet, reference_forward  # noqa: E402
from metarl.learners import MAML  # noqa: E402
from metarl.models import parameters_of  # noqa: E402
from metarl.objectives import SupervisedObjective  # noqa: E402

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
    auto = "loop" if dev.type == "cpu" else "vmap"  # what train.task_batching auto picks (metarl.build)

    def metarl_step(batching: str):
        """metarl's MAML learner with one task batching (loop: plain NCHW convolutions, as build sets up)."""
        model = ConvNet(1, WAYS, layout="nchw" if batching == "loop" else "channels_last").to(dev)
        learner = MAML(SupervisedObjective(model, "cross_entropy"), init, inner_lr=INNER_LR, inner_steps=1)
        learner.batching, learner.chunk_size = batching, 8
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

    steps = {"plain_loop": loop_step, **{b: metarl_step(b) for b in ("loop", "vmap", "chunks")}}
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
        **{f"{b}_speedup_vs_loop": round(ratio(b), 3) for b in ("loop", "vmap", "chunks")},
        "speedup_vs_loop": round(ratio(auto), 3),
        "episodes_per_s": round(tasks / med[auto], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tasks", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(json.dumps(run_omniglot_case(args.device, args.tasks, args.repeats, rounds=args.rounds)))


if __name__ == "__main__":
    main()
