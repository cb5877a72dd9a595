"""Reading a run back from Redis: its metadata and its records, waiting (bounded) for stragglers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import cast

import redis

from tokenbench.aggregator.lost_jobs import LostJobWatch
from tokenbench.aggregator.token_counts import count_streamed_tokens
from tokenbench.shared import keys
from tokenbench.shared.errors import TokenbenchError
from tokenbench.shared.records import (
    ErrorType,
    JobSpec,
    RequestRecord,
    RunMeta,
    parse_stored_records,
    record_problem,
)
from tokenbench.shared.redis_conn import epoch_seconds

POLL_INTERVAL_S = 0.2
# A job taken just before a run's --duration ends is marked in flight within this (worker/stream_worker.py).
END_GRACE_S = 1.0


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


def run_start(connection: redis.Redis, run_id: str) -> float | None:
    """When the run started, on the Redis clock, for a run with a schedule, a ramp-up or a duration."""
    raw = connection.get(keys.run_schedule_start(run_id))
    return None if raw is None else float(raw)


def _duration_over(connection: redis.Redis, meta: RunMeta) -> bool:
    """A run with --duration has nothing more to wait for once its end (and a grace) has passed and
    no request is in flight: its jobs not taken by then are never sent."""
    if meta.duration_s is None:
        return False
    start = run_start(connection, meta.run_id)
    if start is None or epoch_seconds(connection.time()) < start + meta.duration_s + END_GRACE_S:
        return False
    return not connection.hlen(keys.run_in_flight(meta.run_id))


def wait_for_records(
    connection: redis.Redis,
    meta: RunMeta,
    timeout_s: float,
    keep_waiting: Callable[[int | None], bool] | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Wait until every job of the run has its record (a run with --duration: or its end has passed
    with nothing in flight); False when ``timeout_s`` passes first, or when the run was cancelled and
    its last request in flight has ended.

    Meanwhile, requests whose worker died are rerun or recorded as failed (see lost_jobs.py), and a
    Redis that goes away is waited for; one that comes back without the run is a TokenbenchError.
    ``keep_waiting`` is called after every poll with the number of records (None while Redis is
    unreachable); False ends the wait.
    """
    deadline = clock() + timeout_s
    lost_jobs = LostJobWatch(connection, meta, clock)
    while True:
        done: int | None
        try:
            done = count_records(connection, meta.run_id)
            if done >= meta.num_prompts:
                return True
            if done == 0 and not connection.exists(keys.run_meta(meta.run_id)):
                raise TokenbenchError(f"the data of run {meta.run_id} is gone from Redis (restarted without "
                                      "persistence, flushed, or its keys expired): there is nothing left to report")
            if _cancelled_and_settled(connection, meta.run_id):
                return False
            if _duration_over(connection, meta):
                return True
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


def read_records(connection: redis.Redis, meta: RunMeta) -> list[RequestRecord]:
    """The run's records; each one that cannot be read or used becomes an ``unreadable_record``
    failure of its job, so that one odd record never costs the report. Responses that came without
    usage in a run with --tokenizer get their streamed text counted (token_counts.py)."""
    stored = cast("dict[bytes, bytes]", connection.hgetall(keys.run_records(meta.run_id)))
    records: list[RequestRecord | str]
    try:
        records = list(parse_stored_records(list(stored.values())))
    except Exception:  # at least one is not a record: read them one by one
        records = [_parse_one(raw) for raw in stored.values()]
    usable = [_usable_record(meta, field, record) for field, record in zip(stored, records)]
    count_streamed_tokens(usable, meta.workload)  # responses without usage, in a run with --tokenizer
    return usable


def _parse_one(raw: bytes) -> RequestRecord | str:
    try:
        return parse_stored_records([raw])[0]
    except Exception as exc:
        return f"not a stored record ({type(exc).__name__})"


def _usable_record(meta: RunMeta, field: bytes, record: RequestRecord | str) -> RequestRecord:
    index = int(field) if field.isdigit() else -1
    problem = record if isinstance(record, str) else record_problem(record)
    if problem is None and isinstance(record, RequestRecord) and record.index != index:
        problem = f"stored under job {index} but says it is job {record.index}"
    if problem is None:
        assert isinstance(record, RequestRecord)
        return record
    prompt_id = meta.prompt_ids[index] if 0 <= index < len(meta.prompt_ids) else "?"
    spec = JobSpec(run_id=meta.run_id, index=index, prompt_id=prompt_id, category="unknown", messages=[],
                   endpoint={})
    return RequestRecord.failure(spec, "?", "?", ErrorType.UNREADABLE_RECORD, f"record of job {index}: {problem}",
                                 meta.created_at)


def missing_indices(meta: RunMeta, records: list[RequestRecord]) -> list[int]:
    present = {r.index for r in records}
    return [i for i in range(meta.num_prompts) if i not in present]
