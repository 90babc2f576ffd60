"""Meta-reinforcement learning: batched rollouts, baselines and advantages, policy-gradient inner losses,
MAML-RL with TRPO / PPO outer steps, first-order MAML and Reptile for RL, held-out evaluation."""
