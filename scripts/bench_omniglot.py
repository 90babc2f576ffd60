"""Speed of one second-order MAML meta-iteration on Omniglot 5-way 1-shot (32 tasks, conv learner).

Both sides do the same work per iteration: sample an episode (32 tasks, 1 support and 15 query drawings per
class), compute the second-order meta-gradient of one inner step (alpha = 0.4), and take an Adam step.
  batched   metarl's MAML learner (vmap over tasks) on metarl.convnet.ConvNet
  loop      a per-task Python loop: torch's conv2d / batch_norm / max_pool2d and
            torch.autograd.grad(create_graph=True) for the inner step, one backward for the outer loss
Prints one JSON object as the last line: seconds per iteration of each, speedup_vs_loop, episodes per second.

    python scripts/bench_omniglot.py [--device cpu] [--tasks 32] [--repeats 5]
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
                      dist: OmniglotTasks | None = None) -> dict:
    dev = torch.device(device)
    dist = dist or OmniglotTasks(ways=WAYS)
    model = ConvNet(1, WAYS, generator=torch.Generator().manual_seed(0))
    init = parameters_of(model, device=dev)

    # batched: metarl's learner, unchanged
    learner = MAML(SupervisedObjective(model.to(dev), "cross_entropy"), init, inner_lr=INNER_LR, inner_steps=1)
    meta = learner.init_meta_params()
    leaves = [t.requires_grad_() for g in meta.values() for t in g.values()]
    opt_b = torch.optim.Adam(leaves, lr=1e-3)
    gen_b = torch.Generator().manual_seed(1)

    def batched_step():
        ep = dist.sample_episode(tasks, SHOTS, QUERY, gen_b).to(dev)
        grads, loss, _ = learner.meta_gradient(meta, ep.support, ep.query)
        for group in meta:
            for k, t in meta[group].items():
                t.grad = grads[group][k]
        opt_b.step()

    # loop: one task at a time, plain autograd
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

    t_batched = _time(batched_step, repeats, warmup, dev)
    t_loop = _time(loop_step, repeats, warmup, dev)
    return {
        "case": "omniglot_5way_1shot",
        "device": str(dev),
        "tasks": tasks,
        "query_per_class": QUERY,
        "second_order": True,
        "threads": torch.get_num_threads(),
        "batched_s_per_iter": round(t_batched, 4),
        "loop_s_per_iter": round(t_loop, 4),
        "speedup_vs_loop": round(t_loop / t_batched, 3),
        "episodes_per_s_batched": round(tasks / t_batched, 2),
        "episodes_per_s_loop": round(tasks / t_loop, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tasks", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(json.dumps(run_omniglot_case(args.device, args.tasks, args.repeats)))


if __name__ == "__main__":
    main()
