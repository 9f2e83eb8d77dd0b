"""Commands that run and watch the fleet: run, status, worker, db."""
