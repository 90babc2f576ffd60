"""Meta-learners behind one protocol (learners.base): MAML / FOMAML / Meta-SGD, Reptile, the LSTM meta-learner
(each with a supervised objective (metarl.objectives) and an RL one (metarl.rl.objective) alike), learned
example weights and architecture search (supervised: learners.reweight, learners.darts)."""
from metarl.learners.base import Batch, Learner, Objective
from metarl.learners.darts import ArchitectureSearch
from metarl.learners.lstm import LSTMMetaLearner
from metarl.learners.maml import MAML
from metarl.learners.reptile import Reptile
from metarl.learners.reweight import ExampleReweighting

__all__ = ["MAML", "ArchitectureSearch", "Batch", "ExampleReweighting", "LSTMMetaLearner", "Learner", "Objective", "Reptile"]
