"""Cancelling a run: its pending jobs leave the queue, and workers skip any they already took."""

from __future__ import annotations

import time

import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from tokenbench.shared import keys
from tokenbench.shared.records import RunMeta


def cancel_run(connection: redis.Redis, meta: RunMeta) -> int:
    """Mark the run cancelled and remove its jobs still waiting on its queue; return how many were removed.

    The mark comes first: a worker that dequeues one of the run's jobs after it skips the job
    (record_store.mark_in_flight). Requests already in flight finish and keep their records.
    """
    connection.set(keys.run_cancelled(meta.run_id), time.time(), ex=meta.ttl_s)
    queue = Queue(meta.queue, connection=connection, serializer=JSONSerializer)
    prefix = keys.job_id_prefix(meta.run_id)
    removed = 0
    for job_id in queue.get_job_ids():
        if job_id.startswith(prefix) and connection.lrem(queue.key, 0, job_id):
            connection.delete(Job.key_for(job_id))
            removed += 1
    return removed

