"""The algorithm registry: learner.algo -> everything the rest of the code needs to know of an algorithm
(its `Algorithm` spec: the learner it builds, the config keys it reads and their rules, the task families,
outer steps and policy it works with, work after training). An algorithm is one file declaring its spec beside
its inner and outer loop (stated as pseudocode in the file's docstring) and one line below."""
from __future__ import annotations

from metarl.algorithms import anil, darts, lstm, maml, protonet, reptile, reweight, rl2
from metarl.algorithms.rules import Algorithm

ALGORITHMS: dict[str, Algorithm] = {spec.name: spec for spec in (
    maml.SPEC,
    anil.SPEC,
    protonet.SPEC,
    reptile.SPEC,
    lstm.SPEC,
    reweight.SPEC,
    darts.SPEC,
    rl2.SPEC,
)}
DEFAULT = maml.SPEC.name


def algorithm(name: str) -> Algorithm:
    """The spec of learner.algo `name`; an unknown name raises KeyError listing the known ones."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise KeyError(f"unknown algorithm {name!r}; known: {', '.join(ALGORITHMS)}") from None
