"""Writing a run's records and in-flight marks to Redis, the same way from every process.

A record is stored under its job index with HSETNX, so whoever writes first (the worker, or the
aggregator declaring a dead worker's job lost) wins and no request is ever counted twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson
import redis

from tokenbench.shared import keys
from tokenbench.shared.records import RequestRecord, parse_stored_records

# How long a worker keeps trying to store a finished record while Redis is away (e.g. restarting).
SAVE_RETRY_S = 60.0
_RETRY_PAUSE_S = 0.5


@dataclass(frozen=True)
class InFlight:
    """A request being sent right now: which worker process holds it, and which attempt it is."""

    index: int
    worker: str
    attempt: int
    job_id: str

    def to_json(self) -> bytes:
        return orjson.dumps({"worker": self.worker, "attempt": self.attempt, "job_id": self.job_id})

    @classmethod
    def from_hash_entry(cls, index: bytes | str, raw: bytes | str) -> InFlight:
        data = orjson.loads(raw)
        return cls(index=int(index), worker=data["worker"], attempt=data["attempt"], job_id=data["job_id"])


def mark_in_flight(connection: redis.Redis, run_id: str, entry: InFlight, ttl_s: int = keys.RUN_TTL_S) -> bool:
    """Note that ``entry``'s request is starting; False (and nothing noted) when the run was cancelled."""
    with connection.pipeline(transaction=True) as pipe:
        pipe.exists(keys.run_cancelled(run_id))
        pipe.hset(keys.run_in_flight(run_id), str(entry.index), entry.to_json())
        pipe.expire(keys.run_in_flight(run_id), ttl_s)
        cancelled = pipe.execute()[0]
    if cancelled:
        connection.hdel(keys.run_in_flight(run_id), str(entry.index))
    return not cancelled


def read_in_flight(connection: redis.Redis, run_id: str) -> list[InFlight]:
    return [InFlight.from_hash_entry(i, raw) for i, raw in connection.hgetall(keys.run_in_flight(run_id)).items()]


def save_record(
    connection: redis.Redis, record: RequestRecord, *, retry_s: float = 0.0, ttl_s: int = keys.RUN_TTL_S
) -> bool:
    """Store the record under its job index unless one is there already; clear its in-flight mark.

    Returns whether this call stored it (the progress counters move only then). With ``retry_s``,
    connection errors are retried for that long, so a Redis restart does not lose the record.
    """
    deadline = time.monotonic() + retry_s
    while True:
        try:
            return _save_once(connection, record, ttl_s)
        except (redis.ConnectionError, redis.TimeoutError):
            if time.monotonic() >= deadline:
                raise
            time.sleep(_RETRY_PAUSE_S)


def save_warmup_record(connection: redis.Redis, record: RequestRecord, ttl_s: int = keys.RUN_TTL_S) -> None:
    """Keep a warm-up request's record beside the run's records, outside every count."""
    key = keys.run_warmup(record.run_id)
    with connection.pipeline(transaction=False) as pipe:
        pipe.rpush(key, record.to_json())
        pipe.expire(key, ttl_s)
        pipe.execute()


def read_warmup_records(connection: redis.Redis, run_id: str) -> list[RequestRecord]:
    return parse_stored_records(connection.lrange(keys.run_warmup(run_id), 0, -1))


def register_worker(connection: redis.Redis, run_id: str, worker: str, environment: dict,
                    ttl_s: int = keys.RUN_TTL_S) -> None:
    """Note which worker process served the run and what it ran on, so the result explains itself."""
    key = keys.run_workers(run_id)
    with connection.pipeline(transaction=False) as pipe:
        pipe.hset(key, worker, orjson.dumps(environment))
        pipe.expire(key, ttl_s)
        pipe.execute()


def read_workers(connection: redis.Redis, run_id: str) -> dict[str, dict]:
    return {worker.decode(): orjson.loads(raw) for worker, raw in connection.hgetall(keys.run_workers(run_id)).items()}


def _save_once(connection: redis.Redis, record: RequestRecord, ttl_s: int) -> bool:
    records_key = keys.run_records(record.run_id)
    stored = connection.hsetnx(records_key, str(record.index), record.to_json())
    progress_key = keys.run_progress(record.run_id)
    with connection.pipeline(transaction=False) as pipe:
        pipe.hdel(keys.run_in_flight(record.run_id), str(record.index))
        if stored:
            pipe.expire(records_key, ttl_s)
            pipe.hincrby(progress_key, "done", 1)
            pipe.hincrby(progress_key, "failed", 0 if record.success else 1)
            pipe.hincrby(progress_key, "output_tokens", record.output_tokens if record.success else 0)
            pipe.expire(progress_key, ttl_s)
        pipe.execute()
    return bool(stored)
