"""Meta-learners behind one protocol (learners.base): MAML / FOMAML / Meta-SGD, Reptile, the LSTM meta-learner.
Each works with a supervised objective (metarl.objectives) and an RL one (metarl.rl.objective) alike."""
from metarl.learners.base import Batch, Learner, Objective
from metarl.learners.lstm import LSTMMetaLearner
from metarl.learners.maml import MAML
from metarl.learners.reptile import Reptile

__all__ = ["MAML", "Batch", "LSTMMetaLearner", "Learner", "Objective", "Reptile"]
