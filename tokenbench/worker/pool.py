"""Start N RQ worker processes on this host with RQ's own WorkerPool.

Each worker is a ``SimpleWorker``: it runs jobs in its own process instead of forking a child per
job, so its HTTP client and open connections live across jobs and no TTFT pays for a new
handshake.
"""

from __future__ import annotations

from rq import SimpleWorker
from rq.serializers import JSONSerializer
from rq.worker_pool import WorkerPool

from tokenbench.shared.redis_conn import connect
from tokenbench.worker import job


def run_workers(
    redis_url: str, queue_names: list[str], num_workers: int, *, burst: bool, logging_level: str = "INFO"
) -> None:
    """Run the pool until it is stopped (SIGINT/SIGTERM) or, with ``burst``, until the queues are empty."""
    connection = connect(redis_url, "worker-pool")
    job.preload()  # inherited by every worker the pool forks
    pool = WorkerPool(
        queue_names,
        connection=connection,
        num_workers=num_workers,
        worker_class=SimpleWorker,
        serializer=JSONSerializer,
    )
    pool.start(burst=burst, logging_level=logging_level)
