"""The compiled rollout step (policy, action noise and env transition in one graph) against the eager one."""
import torch

from envs.navigation import BatchedNavigation2D
from metarl.nets import parameters_of
from metarl.core.params import expand
from metarl.nets.policies import GaussianMLPPolicy, gaussian_log_prob
from metarl.rl.sampler import BatchedSampler


def test_compiled_sampler_matches_eager_and_leaves_the_env_in_its_final_state():
    policy = GaussianMLPPolicy(2, 2, hidden=(16, 16), init_std=1e-3, generator=torch.Generator().manual_seed(0))
    shared = parameters_of(policy)
    shared["mean.4.weight"].mul_(1e-3)
    shared["mean.4.bias"] = torch.tensor([0.05, -0.05])  # a steady drift: two of the goals are on its path
    per_task = {k: v.clone() for k, v in expand(shared, 3).items()}
    per_task["mean.4.bias"][2] = torch.tensor([-0.05, 0.05])
    tasks = {"goal": torch.tensor([[0.1, -0.1], [0.3, 0.3], [-0.2, 0.2]])}
    eager = BatchedSampler(BatchedNavigation2D(3, 4, horizon=15), policy)
    compiled = BatchedSampler(BatchedNavigation2D(3, 4, horizon=15), policy, compile=True)
    for params in (shared, per_task):
        a = eager.collect(params, tasks, torch.Generator().manual_seed(3))
        b = compiled.collect(params, tasks, torch.Generator().manual_seed(3))
        assert 0 < a.mask.sum() < a.mask.numel()  # some episodes terminated, some did not
        assert torch.equal(a.mask, b.mask)
        for x, y in ((a.obs, b.obs), (a.actions, b.actions), (a.rewards, b.rewards), (a.log_probs, b.log_probs)):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-6)
        # the log-probabilities computed in the step are those of the sampling policy
        if params is shared:
            mean, log_std = policy.call(params, b.obs)
            torch.testing.assert_close(gaussian_log_prob(mean, log_std, b.actions), b.log_probs, rtol=1e-5, atol=1e-3)
        # the sampler ran the transition itself and handed the final state back to the env
        assert compiled.env.t == 15
        last = b.obs[:, :, -1] + b.actions[:, :, -1].clamp(-0.1, 0.1) * b.mask[:, :, -1, None]
        torch.testing.assert_close(compiled.env.state["pos"].view(3, 4, 2), last, rtol=0, atol=1e-6)
    assert a.mask[2].sum() < a.mask[1].sum() == 4 * 15  # per-task params: task 2 now reaches its goal
