"""A learner's code: the sandbox, challenge grading, whole cells and the export."""
