"""Meta-learners: MAML / FOMAML / Meta-SGD, Reptile (and the LSTM meta-learner) behind one interface."""
from metarl.learners.base import MetaLearner, MetaParams, Objective, Params, flat_tensors
from metarl.learners.maml import MAML
from metarl.learners.reptile import Reptile

__all__ = ["MAML", "MetaLearner", "MetaParams", "Objective", "Params", "Reptile", "flat_tensors"]
