"""Writing a run's records and in-flight marks to Redis, the same way from every process.

A record is stored under its job index with HSETNX, so whoever writes first (the worker, or the
aggregator declaring a dead worker's job lost) wins and no request is ever counted twice. The
``queue_*`` functions put their commands on any client or pipeline, redis-py's or its asyncio one:
the workers batch them into one round trip per job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis
from rq.job import Job

from tokenbench.shared import keys
from tokenbench.shared.records import RequestRecord, parse_stored_records


@dataclass(frozen=True)
class InFlight:
    """A request being sent right now, or started ahead by a worker to be sent next (``sent`` false
    until the worker notes its send): which worker process holds it, and which attempt it is."""

    index: int
    worker: str
    attempt: int
    job_id: str
    sent: bool = True

    def to_json(self) -> bytes:
        entry: dict[str, object] = {"worker": self.worker, "attempt": self.attempt, "job_id": self.job_id}
        if not self.sent:
            entry["sent"] = False
        return orjson.dumps(entry)

    @classmethod
    def from_hash_entry(cls, index: bytes | str, raw: bytes | str) -> InFlight:
        data = orjson.loads(raw)
        return cls(index=int(index), worker=data["worker"], attempt=data["attempt"], job_id=data["job_id"],
                   sent=data.get("sent", True))


# Notes a request in flight unless its run was cancelled (then nothing is left to undo): 1 when noted.
# A Lua function, so that the worker's script that starts a batch of jobs runs the same lines.
MARK_IN_FLIGHT_LUA = """
local function mark_in_flight(cancelled, in_flight, index, mark, ttl)
  if redis.call('EXISTS', cancelled) == 1 then return 0 end
  redis.call('HSET', in_flight, index, mark)
  redis.call('EXPIRE', in_flight, ttl)
  return 1
end
"""
_MARK_IN_FLIGHT_SCRIPT = MARK_IN_FLIGHT_LUA + "return mark_in_flight(unpack(ARGV))\n"


def in_flight_words(run_id: str, entry: InFlight, ttl_s: int = keys.RUN_TTL_S) -> list[str | bytes | int]:
    """mark_in_flight's arguments for ``entry``'s request."""
    return [keys.run_cancelled(run_id), keys.run_in_flight(run_id), str(entry.index), entry.to_json(), ttl_s]


# The marks of requests started ahead, rewritten once they are sent (ARGV: the run's in-flight key,
# the index, the mark, for each); a mark gone already (the request ended, or its run's lost-job
# watch settled it) stays gone. One call for a batch: a wave of streams ending together sends as
# many requests started ahead, and a call each cost Redis more than the marks themselves.
_NOTE_SENT_SCRIPT = """
for at = 1, #ARGV, 3 do
  local in_flight, index = ARGV[at], ARGV[at + 1]
  if redis.call('HEXISTS', in_flight, index) == 1 then redis.call('HSET', in_flight, index, ARGV[at + 2]) end
end
return 1
"""


def queue_note_sent(pipe: Any, sent: list[tuple[str, InFlight]]) -> None:
    """Queue on ``pipe``: each (run id, mark)'s request, marked in flight unsent, is sent."""
    if sent:
        pipe.eval(_NOTE_SENT_SCRIPT, 0, *(word for run_id, entry in sent
                                          for word in (keys.run_in_flight(run_id), str(entry.index), entry.to_json())))


def mark_in_flight(client: Any, run_id: str, entry: InFlight, ttl_s: int = keys.RUN_TTL_S) -> Any:
    """Note that ``entry``'s request is starting, unless the run was cancelled; the reply (awaited on an
    asyncio client) is 1 when noted, 0 when the run was cancelled."""
    return client.eval(_MARK_IN_FLIGHT_SCRIPT, 0, *in_flight_words(run_id, entry, ttl_s))


_UNSENT = b'"sent":false'  # as InFlight.to_json writes it


def sent_count(marks: list[bytes]) -> int:
    """How many of a run's in-flight marks (their values) are requests sent, not jobs started ahead."""
    return sum(_UNSENT not in mark for mark in marks)


def read_in_flight(connection: redis.Redis, run_id: str) -> list[InFlight]:
    return [InFlight.from_hash_entry(i, raw) for i, raw in connection.hgetall(keys.run_in_flight(run_id)).items()]


# HSETNX and the counters in one step, so that a record is stored once and counted once whoever
# writes it (a worker, or the aggregator settling a lost request), in one round trip. A Lua function,
# so that the worker's script that ends a batch of jobs runs the same lines.
SAVE_RECORD_LUA = """
local function save_record(records, progress, in_flight, index, record, ttl, failed, tokens)
  if record == '' then  -- nothing to store (no_record_words): only the mark goes
    redis.call('HDEL', in_flight, index)
    return 0
  end
  local stored = redis.call('HSETNX', records, index, record)
  redis.call('HDEL', in_flight, index)
  if stored == 1 then
    redis.call('EXPIRE', records, ttl)
    redis.call('HINCRBY', progress, 'done', 1)
    redis.call('HINCRBY', progress, 'failed', failed)
    redis.call('HINCRBY', progress, 'output_tokens', tokens)
    redis.call('EXPIRE', progress, ttl)
  end
  return stored
end
"""
_SAVE_RECORD_SCRIPT = SAVE_RECORD_LUA + "return save_record(unpack(ARGV))\n"


def save_record_words(record: RequestRecord, ttl_s: int = keys.RUN_TTL_S) -> list[str | bytes | int]:
    """save_record's arguments for ``record``."""
    run_id = record.run_id
    return [keys.run_records(run_id), keys.run_progress(run_id), keys.run_in_flight(run_id), str(record.index),
            record.to_json(), ttl_s, 0 if record.success else 1, record.output_tokens if record.success else 0]


def no_record_words(run_id: str, index: int) -> list[str | bytes | int]:
    """save_record's arguments for a request that ends with no record (not sent): the call only
    clears its in-flight mark."""
    return ["", "", keys.run_in_flight(run_id), str(index), "", "", "", ""]


def queue_save_record(pipe: Any, record: RequestRecord, ttl_s: int = keys.RUN_TTL_S) -> Any:
    """Queue on ``pipe`` (a sync or asyncio client or pipeline): store the record under its job
    index unless one is there already, clear its in-flight mark, and move the progress counters
    if it was stored. Its reply is 1 when this call stored it."""
    return pipe.eval(_SAVE_RECORD_SCRIPT, 0, *save_record_words(record, ttl_s))


def save_record(connection: redis.Redis, record: RequestRecord, ttl_s: int = keys.RUN_TTL_S) -> bool:
    """Store the record unless its index has one already; whether this call stored it."""
    return bool(queue_save_record(connection, record, ttl_s))


def queue_save_warmup_records(pipe: Any, records: list[RequestRecord], ttl_s: int = keys.RUN_TTL_S) -> None:
    """Keep warm-up requests' records beside the run's records, outside every count."""
    key = keys.run_warmup(records[0].run_id)
    pipe.rpush(key, *(record.to_json() for record in records))
    pipe.expire(key, ttl_s)


# Removes every job id starting with ARGV[1] from the queue KEYS[1], and its hash: the list is
# rebuilt without them in one pass (an LREM each would be quadratic in the queue's length).
_DROP_RUN_JOBS_SCRIPT = """
local ids = redis.call('LRANGE', KEYS[1], 0, -1)
local kept, dropped = {}, 0
for _, id in ipairs(ids) do
  if string.sub(id, 1, #ARGV[1]) == ARGV[1] then
    redis.call('DEL', ARGV[2] .. id)
    dropped = dropped + 1
  else
    kept[#kept + 1] = id
  end
end
if dropped > 0 then
  redis.call('DEL', KEYS[1])
  for i = 1, #kept, 1000 do
    redis.call('RPUSH', KEYS[1], unpack(kept, i, math.min(i + 999, #kept)))
  end
end
return dropped
"""


def drop_queued_jobs(client: Any, queue_key: str, run_id: str) -> Any:
    """Remove the run's jobs still waiting on the queue, and their hashes, in one step (other runs'
    jobs keep their order); the reply is how many. On an asyncio client, await it."""
    return client.eval(_DROP_RUN_JOBS_SCRIPT, 1, queue_key, keys.job_id_prefix(run_id), Job.redis_job_namespace_prefix)


def read_warmup_records(connection: redis.Redis, run_id: str) -> list[RequestRecord]:
    return parse_stored_records(cast("list[bytes]", connection.lrange(keys.run_warmup(run_id), 0, -1)))


def queue_register_worker(pipe: Any, run_id: str, worker: str, environment: dict[str, Any],
                          ttl_s: int = keys.RUN_TTL_S) -> None:
    """Note which worker process served the run and what it ran on, so the result explains itself."""
    key = keys.run_workers(run_id)
    pipe.hset(key, worker, orjson.dumps(environment))
    pipe.expire(key, ttl_s)


def read_workers(connection: redis.Redis, run_id: str) -> dict[str, dict[str, Any]]:
    return _json_by_worker(connection.hgetall(keys.run_workers(run_id)))


def read_loop_lag(connection: redis.Redis, run_id: str) -> dict[str, dict[str, Any]]:
    """Worker -> the histogram of its event loop's lag while it served the run (worker/loop_lag.py)."""
    return _json_by_worker(connection.hgetall(keys.run_loop_lag(run_id)))


def _json_by_worker(stored: Any) -> dict[str, dict[str, Any]]:
    """A hash of worker -> JSON object, read back (redis-py gives bytes: no decode_responses). An entry
    that is not one (whoever can write to the Redis can write it) is left out."""
    read = {}
    for worker, raw in cast("dict[bytes, bytes]", stored).items():
        try:
            name, value = worker.decode(), orjson.loads(raw)
        except (UnicodeDecodeError, orjson.JSONDecodeError):
            continue
        if isinstance(value, dict):
            read[name] = value
    return read
