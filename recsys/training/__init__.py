"""Training: optimizers, LR schedule, metrics, checkpoints, reporting and the loop."""
