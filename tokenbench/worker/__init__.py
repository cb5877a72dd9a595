"""The worker: RQ worker processes that each stream one request per job and push its timing record."""
