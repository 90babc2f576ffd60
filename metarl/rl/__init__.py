"""Meta-reinforcement learning pieces: batched rollouts (sampler), the Gaussian policy, returns / baselines /
advantages, policy-gradient inner losses (estimators) and the TRPO / PPO surrogate (objective), and the
rollout experience source. The learners and outer steps are shared with supervised learning."""
