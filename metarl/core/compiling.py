"""torch.compile for the few hot functions (meta-gradient, rollout step): tensor-only guards, a C++ wrapper,
a private graph cache per owner, and a loud fallback to eager when compiling fails."""
from __future__ import annotations

import types
import warnings
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


def compile_options() -> dict[str, Any]:
    """Guard only on the input tensors: everything else a compiled function reads (learner, model structure,
    step sizes in the config) is fixed for its owner's lifetime (see with_own_code), and checking it on every
    call costs a tenth of a small model's iteration. Older torch versions lack the filter."""
    keep = getattr(torch.compiler, "keep_tensor_guards_unsafe", None)
    # A C++ wrapper launches the graph's kernels without a Python call each (~15% of a small model's step).
    options: dict[str, Any] = {"cpp_wrapper": True}
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
