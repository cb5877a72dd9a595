"""RQ's bookkeeping of a worker's jobs, a batch at a time, each step one script: start, keep alive, end.

A job stays an RQ job: started, it has an execution in RQ's StartedJobRegistry and the worker's
index of executions, its hash says ``started`` and by whom; ended, those go and (result_ttl 0) so
does its hash. RQ's own objects do this (Job.restore, Execution.create, prepare_for_execution,
Execution.delete) with ~300 us of Python a job and a dozen commands that redis-py packs one by one:
the costliest part of a short request in the worker. The scripts here make the same changes to the
same keys, named by RQ's own key templates, from a few words a job; tests/test_rq_jobs.py holds
their effects to those of RQ's methods, key by key. RQ's objects are still built for the rare job
that fails in RQ's terms (refused, interrupted), whose failure RQ records itself.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from rq.defaults import RQ_KEY_PREFIX
from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE, ExecutionRegistry
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.utils import now, parse_timeout, utcformat

from tokenbench.shared.record_store import MARK_IN_FLIGHT_LUA, SAVE_RECORD_LUA

# ARGV: the worker's name, its index of executions, now (as RQ writes it in an execution, in a
# job's hash, and as a registry's whole seconds), then 14 words a job. A job whose run was
# cancelled while it waited is dropped (nothing is sent): 0 in the reply, else 1.
_START_SCRIPT = MARK_IN_FLIGHT_LUA + """
local worker, worker_executions = ARGV[1], ARGV[2]
local created, utc, seconds = ARGV[3], ARGV[4], tonumber(ARGV[5])
local started = {}
for at = 6, #ARGV, 14 do
  local job_key, job_id, execution_id, execution_key, composite, intermediate, wip, executions, ttl,
        cancelled, in_flight, index, mark, run_ttl = unpack(ARGV, at, at + 13)
  ttl = tonumber(ttl)
  redis.call('LREM', intermediate, 1, job_id)
  if mark_in_flight(cancelled, in_flight, index, mark, run_ttl) == 0 then
    redis.call('DEL', job_key)
    started[#started + 1] = 0
  else
    redis.call('HSET', execution_key, 'id', execution_id, 'job_id', job_id, 'created_at', created,
               'last_heartbeat', created, 'worker_name', worker)
    redis.call('EXPIRE', execution_key, ttl)
    redis.call('ZADD', executions, seconds + ttl + 60, execution_id)
    redis.call('EXPIRE', executions, ttl + 60)
    redis.call('ZADD', wip, seconds + ttl, composite)
    redis.call('SADD', worker_executions, composite)
    redis.call('EXPIRE', worker_executions, ttl + 60)
    redis.call('HSET', job_key, 'last_heartbeat', utc, 'status', 'started', 'started_at', utc,
               'worker_name', worker)
    started[#started + 1] = 1
  end
end
return started
"""
_START_WORDS = 14

# ARGV: now (as RQ writes it in an execution, in a job's hash, and as whole seconds), then 7 words a
# job: RQ's heartbeat of a running job (its execution, the registries' scores, the job's hash).
# A key that is gone is not written again (a job that ended meanwhile keeps no half hash).
_KEEP_ALIVE_SCRIPT = """
local beat, utc, seconds = ARGV[1], ARGV[2], tonumber(ARGV[3])
for at = 4, #ARGV, 7 do
  local job_key, execution_id, execution_key, composite, wip, executions, ttl = unpack(ARGV, at, at + 6)
  ttl = tonumber(ttl)
  if redis.call('EXISTS', execution_key) == 1 then
    redis.call('HSET', execution_key, 'last_heartbeat', beat)
    redis.call('EXPIRE', execution_key, ttl)
    redis.call('ZADD', wip, 'XX', seconds + ttl, composite)
    redis.call('ZADD', executions, 'XX', seconds + ttl + 60, execution_id)
    redis.call('EXPIRE', executions, ttl + 60)
  end
  if redis.call('EXISTS', job_key) == 1 then
    redis.call('HSET', job_key, 'last_heartbeat', utc)
  end
end
return 1
"""
_KEEP_ALIVE_WORDS = 7

# ARGV: the worker's key and its index of executions, then 16 words an entry: whether it ends its
# job and whether the job failed (then RQ keeps its hash, to record the failure), save_record's
# words (a record's, or no_record_words), and the job's keys as in the start.
_END_SCRIPT = SAVE_RECORD_LUA + """
local worker_key, worker_executions = ARGV[1], ARGV[2]
for at = 3, #ARGV, 16 do
  local ends, failed_job, records, progress, in_flight, index, record, run_ttl, failed, tokens,
        job_key, execution_id, execution_key, composite, wip, executions = unpack(ARGV, at, at + 15)
  save_record(records, progress, in_flight, index, record, run_ttl, failed, tokens)
  if ends == '1' then
    redis.call('DEL', execution_key)
    redis.call('ZREM', wip, composite)
    redis.call('ZREM', executions, execution_id)
    redis.call('SREM', worker_executions, composite)
    if failed_job == '0' then
      redis.call('DEL', job_key)
      redis.call('HINCRBY', worker_key, 'successful_job_count', 1)
    end
  end
end
return 1
"""
# ARGV: the worker's index of executions, then 10 words a job, the last to go back first: a job
# started and not sent goes back to the front of its queue as RQ requeues one (status queued),
# its execution and its in-flight mark gone. A job whose hash is gone (its run ended) stays gone.
_GIVE_BACK_SCRIPT = """
local worker_executions = ARGV[1]
for at = 2, #ARGV, 10 do
  local job_key, execution_id, execution_key, composite, wip, executions, job_id, queue, in_flight, index =
        unpack(ARGV, at, at + 9)
  redis.call('HDEL', in_flight, index)
  redis.call('DEL', execution_key)
  redis.call('ZREM', wip, composite)
  redis.call('ZREM', executions, execution_id)
  redis.call('SREM', worker_executions, composite)
  if redis.call('EXISTS', job_key) == 1 then
    redis.call('HSET', job_key, 'status', 'queued')
    redis.call('LPUSH', queue, job_id)
  end
end
return 1
"""
Words = list[str | bytes | int]


@dataclass(frozen=True, eq=False)  # one per take: equal only to itself
class RQJob:
    """A job this worker took from a queue, and the RQ keys of its execution here."""

    job_id: str
    queue: Queue
    fields: dict[bytes, bytes]  # its hash as taken: RQ's Job is built from it only to fail it
    execution_id: str = field(default_factory=lambda: uuid4().hex)
    started_at: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> str:
        return Job.key_for(self.job_id)

    @property
    def timeout(self) -> int | None:
        """RQ's job timeout, in seconds (None or <= 0: none)."""
        raw = self.fields.get(b"timeout")
        return parse_timeout(raw.decode()) if raw else None

    @property
    def composite_key(self) -> str:  # as RQ's Execution.composite_key
        return f"{self.job_id}:{self.execution_id}"

    @property
    def execution_key(self) -> str:  # as RQ's Execution.key
        return f"{RQ_KEY_PREFIX}:execution:{self.composite_key}"

    @property
    def executions_key(self) -> str:  # the job's ExecutionRegistry
        return ExecutionRegistry.key_template.format(self.job_id)

    def call(self) -> tuple[Any, Any, Any]:
        """What the job asks to call, read from its data as RQ's JSONSerializer reads it (zlib-compressed
        or not): the function's name, the args and the kwargs. Raises when the data is not that."""
        data = self.fields[b"data"]
        try:
            data = zlib.decompress(data)
        except zlib.error:
            pass
        func_name, _instance, args, kwargs = orjson.loads(data)
        return func_name, args, kwargs

    def rq_job(self, connection: Any) -> Job:
        """RQ's own Job, restored from the hash taken (to record a failure the RQ way)."""
        job = Job(self.job_id, connection=connection, serializer=JSONSerializer)
        job.restore(self.fields)
        return job


class JobBook:
    """One worker's RQ bookkeeping of its jobs: the words of each job in a batch's script."""

    def __init__(self, worker_name: str, worker_key: str, queues: list[Queue], monitoring_interval_s: float) -> None:
        self._worker_name = worker_name
        self._worker_key = worker_key
        self._worker_executions_key = WORKER_EXECUTIONS_KEY_TEMPLATE.format(worker_name)
        self._wip_keys = {queue.name: queue.started_job_registry.key for queue in queues}
        self.monitoring_interval_s = monitoring_interval_s

    def heartbeat_ttl(self, job: RQJob, working_s: float = 0.0) -> int:
        """How long the job's execution lives without a heartbeat, as RQ's BaseWorker.get_heartbeat_ttl."""
        timeout = job.timeout
        if timeout and timeout > 0:
            return int(min(timeout - working_s, self.monitoring_interval_s)) + 60
        return int(self.monitoring_interval_s) + 60

    def _job_words(self, job: RQJob) -> Words:
        return [job.key, job.execution_id, job.execution_key, job.composite_key, self._wip_keys[job.queue.name],
                job.executions_key]

    async def start(self, connection: Redis, jobs: list[tuple[RQJob, Words]]) -> list[bool]:
        """Start the jobs, each with its in-flight mark (``in_flight_words``); False for a job whose
        run was cancelled: it is dropped, and nothing is left to undo."""
        if not jobs:
            return []
        moment = now()
        words: Words = [self._worker_name, self._worker_executions_key, repr(moment.timestamp()), utcformat(moment),
                        int(moment.timestamp())]
        for job, in_flight in jobs:
            key, execution_id, execution_key, composite, wip, executions = self._job_words(job)
            words += [key, job.job_id, execution_id, execution_key, composite, job.queue.intermediate_queue_key,
                      wip, executions, self.heartbeat_ttl(job), *in_flight]
        replies = await connection.eval(_START_SCRIPT, 0, *words)
        return [bool(reply) for reply in replies]

    async def keep_alive(self, connection: Redis, jobs: list[RQJob]) -> None:
        """RQ's heartbeat of the running jobs: without it RQ takes a job running longer than its
        execution's TTL (90 s) for abandoned, and moves it to the FailedJobRegistry."""
        if not jobs:
            return
        moment = now()
        at = time.monotonic()
        words: Words = [repr(moment.timestamp()), utcformat(moment), int(moment.timestamp())]
        for job in jobs:
            words += [*self._job_words(job), self.heartbeat_ttl(job, at - job.started_at)]
        await connection.eval(_KEEP_ALIVE_SCRIPT, 0, *words)

    async def give_back(self, connection: Redis, jobs: list[tuple[RQJob, str, str]]) -> None:
        """Undo the start of jobs not sent (each with its run's in-flight key and its index there):
        back to the front of their queues, in order."""
        if not jobs:
            return
        words: Words = [self._worker_executions_key]
        for job, in_flight, index in reversed(jobs):
            words += [*self._job_words(job), job.job_id, job.queue.key, in_flight, index]
        await connection.eval(_GIVE_BACK_SCRIPT, 0, *words)

    def queue_end(self, pipe: Pipeline, entries: list[Words]) -> None:
        """Queue on ``pipe`` the script that saves the entries (``end_words``)."""
        if entries:
            pipe.eval(_END_SCRIPT, 0, self._worker_key, self._worker_executions_key,
                      *(word for entry in entries for word in entry))

    def end_words(self, job: RQJob, save: Words, ends_job: bool, failed: bool) -> Words:
        """One entry of the end script: ``save`` is save_record's words (``save_record_words``, or
        ``no_record_words`` for a job that ends without one)."""
        return ["1" if ends_job else "0", "1" if failed else "0", *save, *self._job_words(job)]
