"""Experiments: suite files, the training loop, cost accounting, pretraining, running a suite, executors."""
