"""Cancelling a run: its pending jobs leave the queue, and workers skip any they already took or
started ahead (within a heartbeat: see worker/stream_worker.py)."""

from __future__ import annotations

import time

import redis
from rq import Queue

from tokenbench.shared import keys
from tokenbench.shared.record_store import drop_queued_jobs, read_in_flight
from tokenbench.shared.records import RunMeta


def cancel_run(connection: redis.Redis, meta: RunMeta) -> int:
    """Mark the run cancelled and remove its jobs still waiting on its queue; return how many were removed.

    The mark comes first: a worker that dequeues one of the run's jobs after it skips the job
    (record_store.mark_in_flight). Requests already in flight finish and keep their records.
    """
    connection.set(keys.run_cancelled(meta.run_id), time.time(), ex=meta.ttl_s)
    return int(drop_queued_jobs(connection, Queue(meta.queue, connection=connection).key, meta.run_id))


def started_ahead(connection: redis.Redis, meta: RunMeta) -> int:
    """How many of the run's requests workers hold started and not sent (they drop them, unsent)."""
    return sum(not entry.sent for entry in read_in_flight(connection, meta.run_id))
