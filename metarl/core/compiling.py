"""torch.compile for the few hot functions (meta-gradient, rollout step): tensor-only guards, a C++ wrapper,
a private graph cache per owner, and a loud fallback to eager when compiling fails."""
from __future__ import annotations

import hashlib
import types
import warnings
from pathlib import Path
from typing import Any, Callable

import torch


def with_own_code(fn: Callable, tag: object) -> Callable:
    """`fn` (a function or bound method) with a code object of its own, named after `tag`.

    torch.compile caches graphs per code object and, with tensor-only guards, could not tell two owners apart
    (another inner_lr, model or policy would silently reuse the first one's graph); a private code object
    gives each owner its own cache."""
    f = getattr(fn, "__func__", fn)
    code = f.__code__.replace(co_name=f"{f.__name__}_{id(tag):x}")
    new = types.FunctionType(code, f.__globals__, code.co_name, f.__defaults__, f.__closure__)
    self = getattr(fn, "__self__", None)
    return types.MethodType(new, self) if self is not None else new


try:  # the custom-pass interface of torch >= 2.6's inductor
    from torch._inductor.custom_graph_pass import CustomGraphPass
except ImportError:  # pragma: no cover - older torch: compiled without the pass
    CustomGraphPass = None


class NarrowBatchedMatmul(CustomGraphPass or object):
    """Inductor post-grad pass: on the CPU, bmm(a, b) whose output is narrow (N <= 16 columns, fewer than its M
    rows) becomes bmm(b^T, a^T)^T. MKL's batched GEMM is 2-8x slower on narrow outputs whatever the strides
    (25 x 40x40 @ 40x10: 24-41 us against 9.5 us swapped; 32 x 75x64 @ 64x5: 25-84 against 20 us), and
    vmapped inner loops make them: the per-task products of a weight with the support set. Wide outputs are
    left alone (no gain measured). `rewritten` counts the products changed (tests/test_compile.py)."""

    NARROW = 16

    def __init__(self) -> None:
        self.rewritten = 0

    def __call__(self, graph: torch.fx.Graph) -> None:
        aten = torch.ops.aten
        for node in list(graph.nodes):
            out = node.meta.get("val") if node.target is aten.bmm.default else None
            if out is None or out.device.type != "cpu":
                continue
            rows, cols = out.shape[1], out.shape[2]
            if not (cols <= self.NARROW and cols < rows):
                continue
            a, b = node.args
            with graph.inserting_before(node), out.fake_mode:
                bt = graph.call_function(aten.permute.default, (b, [0, 2, 1]))
                bt.meta["val"] = b.meta["val"].permute(0, 2, 1)
                at = graph.call_function(aten.permute.default, (a, [0, 2, 1]))
                at.meta["val"] = a.meta["val"].permute(0, 2, 1)
                prod = graph.call_function(aten.bmm.default, (bt, at))
                prod.meta["val"] = torch.bmm(bt.meta["val"], at.meta["val"])
                swapped = graph.call_function(aten.permute.default, (prod, [0, 2, 1]))
                swapped.meta["val"] = prod.meta["val"].permute(0, 2, 1)
            node.replace_all_uses_with(swapped)
            graph.erase_node(node)
            self.rewritten += 1

    def uuid(self) -> str:  # the compiled-graph cache key: this file's text
        return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


#: the one instance every compiled function uses
NARROW_BMM = NarrowBatchedMatmul()


def compile_options() -> dict[str, Any]:
    """Guard only on the input tensors: everything else a compiled function reads (learner, model structure,
    step sizes in the config) is fixed for its owner's lifetime (see with_own_code), and checking it on every
    call costs a tenth of a small model's iteration. Older torch versions lack the filter."""
    keep = getattr(torch.compiler, "keep_tensor_guards_unsafe", None)
    # A C++ wrapper launches the graph's kernels without a Python call each (~15% of a small model's step).
    options: dict[str, Any] = {"cpp_wrapper": True}
    if CustomGraphPass is not None:
        options["post_grad_custom_post_pass"] = NARROW_BMM
    if keep is not None:
        options["guard_filter_fn"] = keep
    return options


def compile_with_fallback(fn: Callable, tag: object, what: str) -> Callable:
    """torch.compile(fn) as one graph (fullgraph: a graph break is an error, not a silent slowdown), with
    tensor-only guards and its own graph cache. If the first call fails to compile (a graph break, no C++
    compiler on this machine), warn once, naming `what`, and run `fn` eagerly from then on: the same numbers,
    slower (tests/test_compile.py fails on either)."""
    compiled = torch.compile(with_own_code(fn, tag), dynamic=False, fullgraph=True, options=compile_options())
    state = {"call": None}

    def first_call(*args, **kwargs):
        try:
            out = compiled(*args, **kwargs)
            state["call"] = compiled
        except Exception as e:  # noqa: BLE001 - any compiler failure; the eager path is always available
            warnings.warn(f"{what}: torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                          "continuing without it", RuntimeWarning, stacklevel=2)
            state["call"] = fn
            out = fn(*args, **kwargs)
        return out

    def call(*args, **kwargs):
        return (state["call"] or first_call)(*args, **kwargs)

    return call
