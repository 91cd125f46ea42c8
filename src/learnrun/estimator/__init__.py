"""The PyTorch Estimator: training loop, hooks, checkpoints, evaluation, summaries."""
