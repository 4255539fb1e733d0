"""Exercise 4: the training loop, its kernels, the learner's compiled block, evaluation, a run's config."""
