"""Meta-World (the `metaworld` extra): its ML1 / ML10 task families on the batched-env contract (tasks.py), and
its own meta-learning evaluation of a trained run (evaluation.py)."""
from envs.meta_world.tasks import (MAX_PATH_LENGTH, REWARD_VERSIONS, BatchedMetaWorld, MetaWorldTasks, make_batched,
                                   ml1_tasks, ml10_tasks, single_env, sub_env_factory)

__all__ = ["MAX_PATH_LENGTH", "REWARD_VERSIONS", "BatchedMetaWorld", "MetaWorldTasks", "make_batched", "ml1_tasks",
           "ml10_tasks", "single_env", "sub_env_factory"]
