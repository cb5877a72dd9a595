"""Reading a run back from Redis: its metadata and its records, waiting (bounded) for stragglers."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from tokenbench.aggregator.lost_jobs import LostJobWatch
from tokenbench.shared import keys
from tokenbench.shared.errors import TokenbenchError
from tokenbench.shared.records import RequestRecord, RunMeta, parse_stored_records

POLL_INTERVAL_S = 0.2


def load_meta(connection: redis.Redis, run_id: str) -> RunMeta:
    raw = connection.get(keys.run_meta(run_id))
    if raw is None:
        raise TokenbenchError(f"unknown run id {run_id!r}: no such run in this Redis")
    return RunMeta.from_json(raw)


def count_records(connection: redis.Redis, run_id: str) -> int:
    return connection.hlen(keys.run_records(run_id))


def is_cancelled(connection: redis.Redis, run_id: str) -> bool:
    return bool(connection.exists(keys.run_cancelled(run_id)))


def _cancelled_and_settled(connection: redis.Redis, run_id: str) -> bool:
    """A cancelled run has nothing more to wait for once its requests in flight are done."""
    return is_cancelled(connection, run_id) and not connection.hlen(keys.run_in_flight(run_id))


def wait_for_records(
    connection: redis.Redis,
    meta: RunMeta,
    timeout_s: float,
    keep_waiting: Callable[[int | None], bool] | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Wait until every job of the run has its record; False when ``timeout_s`` passes first, or
    when the run was cancelled and its last request in flight has ended.

    Meanwhile, requests whose worker died are rerun or recorded as failed (see lost_jobs.py), and a
    Redis that goes away is waited for. ``keep_waiting`` is called after every poll with the number
    of records (None while Redis is unreachable); False ends the wait.
    """
    deadline = clock() + timeout_s
    lost_jobs = LostJobWatch(connection, meta, clock)
    while True:
        done: int | None
        try:
            done = count_records(connection, meta.run_id)
            if done >= meta.num_prompts:
                return True
            if _cancelled_and_settled(connection, meta.run_id):
                return False
            lost_jobs.check()
        except (redis.ConnectionError, redis.TimeoutError):
            lost_jobs.redis_unreachable()
            done = None
        if keep_waiting is not None and not keep_waiting(done):
            return False
        remaining = deadline - clock()
        if remaining <= 0:
            return False
        sleep(min(POLL_INTERVAL_S, remaining))


def read_records(connection: redis.Redis, run_id: str) -> list[RequestRecord]:
    return parse_stored_records(connection.hvals(keys.run_records(run_id)))


def missing_indices(meta: RunMeta, records: list[RequestRecord]) -> list[int]:
    present = {r.index for r in records}
    return [i for i in range(meta.num_prompts) if i not in present]
