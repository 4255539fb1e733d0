"""Training runs: the SQLite and PostgreSQL stores, the scheduler, the queue, workers and run processes."""
