"""Meta-learners behind one protocol (learners.base): MAML / FOMAML / Meta-SGD, Reptile, the LSTM meta-learner
(each with a supervised objective (metarl.objectives) and an RL one (metarl.rl.objective) alike), and learned
example weights (supervised: learners.reweight)."""
from metarl.learners.base import Batch, Learner, Objective
from metarl.learners.lstm import LSTMMetaLearner
from metarl.learners.maml import MAML
from metarl.learners.reptile import Reptile
from metarl.learners.reweight import ExampleReweighting

__all__ = ["MAML", "Batch", "ExampleReweighting", "LSTMMetaLearner", "Learner", "Objective", "Reptile"]
