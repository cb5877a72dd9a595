"""The worker's scripts for RQ's bookkeeping (worker/rq_jobs.py) leave a job's keys as RQ's own
methods do, on the real Redis: one job started, kept alive and ended by RQ's objects, its twin by
the scripts, and every RQ key of the two compared (values, scores and TTLs, ids and times aside)."""

from __future__ import annotations

import asyncio
import re
import time

import redis
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from tokenbench.producer.enqueue import enqueue_run
from tokenbench.producer.prompts import BUILTIN_PROMPTS, select_prompts
from tokenbench.shared import keys
from tokenbench.shared.endpoint import Endpoint
from tokenbench.shared.record_store import InFlight, in_flight_words, no_record_words, save_record_words
from tokenbench.shared.records import RequestRecord
from tokenbench.shared.redis_conn import connect, connect_async
from tokenbench.worker.rq_jobs import JobBook, RQJob
from tokenbench.worker.stream_worker import StreamWorker

QUEUE = "rq-jobs-test"
_PAYLOAD = {b"data", b"description"}  # the two jobs' prompts, not their bookkeeping
_ISO_TIME = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$")


def rq_keys_of(connection: redis.Redis, job_id: str, execution_id: str, now: int) -> dict[str, object]:
    """Every RQ key that names the job, read back with the job's and its execution's ids as X and E,
    times as T, scores and TTLs as seconds from ``now`` (each within a second of the other job's)."""

    def plain(raw: bytes | str) -> str:
        text = raw.decode() if isinstance(raw, bytes) else raw
        return text.replace(job_id, "X").replace(execution_id, "E")

    def value(raw: bytes) -> str:
        if _ISO_TIME.match(raw):
            return "T"
        try:
            return "T" if abs(float(raw) - now) < 60 else plain(raw)
        except ValueError:
            return plain(raw)

    seen: dict[str, object] = {}
    for key in sorted(connection.keys("rq:*")):
        kind = connection.type(key).decode()
        if kind == "hash":
            content: object = {plain(f): "-" if f in _PAYLOAD else value(v) for f, v in connection.hgetall(key).items()}
        elif kind == "zset":
            content = {plain(m): round(s - now) for m, s in connection.zrange(key, 0, -1, withscores=True)
                       if job_id.encode() in m or m == execution_id.encode()}
        elif kind == "set":
            content = sorted(plain(m) for m in connection.smembers(key) if job_id.encode() in m)
        elif kind == "list":
            content = [plain(m) for m in connection.lrange(key, 0, -1) if job_id.encode() in m]
        else:
            content = kind
        named = job_id in key.decode()
        if named or content:
            seen[plain(key)] = (content, connection.ttl(key))
    return seen


def close_enough(ours: dict[str, object], rqs: dict[str, object]) -> bool:
    """The same keys and contents; scores and TTLs within a second (the two were written apart)."""
    if ours.keys() != rqs.keys():
        return False
    for key, (content, ttl) in ours.items():
        rq_content, rq_ttl = rqs[key]  # type: ignore[misc]
        if abs(ttl - rq_ttl) > 1:
            return False
        if isinstance(content, dict) and all(isinstance(v, int) for v in content.values()):
            if content.keys() != rq_content.keys() or any(abs(v - rq_content[k]) > 1 for k, v in content.items()):
                return False
        elif content != rq_content:
            return False
    return True


def two_jobs(connection: redis.Redis) -> tuple[str, list[str]]:
    endpoint = Endpoint(mode="openai", base_url="http://127.0.0.1:9/v1", model="m", max_tokens=8)
    run_id = enqueue_run(connection, endpoint, select_prompts(2, BUILTIN_PROMPTS), queue_name=QUEUE).run_id
    return run_id, [keys.job_id(run_id, 0), keys.job_id(run_id, 1)]


def without_other(snapshot: dict[str, object], other: str) -> dict[str, object]:
    return {key: value for key, value in snapshot.items() if other not in key}


def test_start_keep_alive_and_end_leave_rqs_keys_as_rqs_own_methods_do(redis_url):
    connection = redis.Redis.from_url(redis_url)
    run_id, (rq_id, our_id) = two_jobs(connection)
    queue = Queue(QUEUE, connection=connection, serializer=JSONSerializer)
    worker = StreamWorker([QUEUE], connection=connect(redis_url, "test"),
                          async_connection=connect_async(redis_url, "test"), streams=1)
    worker.register_birth()  # RQ's heartbeat wants a worker that was born
    book = JobBook(worker.name, worker.key, worker.queues, worker.job_monitoring_interval)
    for _ in range(2):
        connection.lmove(queue.key, queue.intermediate_queue_key)

    # RQ's way, for the first job
    rq_job = Job.fetch(rq_id, connection=connection, serializer=JSONSerializer)
    with connection.pipeline() as pipe:
        execution = Execution.create(rq_job, worker.get_heartbeat_ttl(rq_job), pipeline=pipe, worker_name=worker.name)
        rq_job.prepare_for_execution(worker.name, pipeline=pipe)
        pipe.lrem(queue.intermediate_queue_key, 1, rq_id)
        pipe.execute()

    # the scripts', for its twin
    ours = RQJob(our_id, worker.queues[0], connection.hgetall(Job.key_for(our_id)))
    mark = in_flight_words(run_id, InFlight(1, "w", 0, our_id))
    aconnection = connect_async(redis_url, "test")

    async def run(step):
        try:
            return await step
        finally:
            await aconnection.aclose()

    assert asyncio.run(run(book.start(aconnection, [(ours, mark)]))) == [True]

    def compare(moment: int) -> tuple[dict, dict]:
        return (without_other(rq_keys_of(connection, our_id, ours.execution_id, moment), rq_id),
                without_other(rq_keys_of(connection, rq_id, execution.id, moment), our_id))

    started_ours, started_rq = compare(int(time.time()))
    assert "rq:execution:X:E" in started_ours and "rq:wip:" + QUEUE in started_ours
    assert close_enough(started_ours, started_rq), (started_ours, started_rq)
    assert StartedJobRegistry(QUEUE, connection=connection).count == 2  # both running, neither abandoned

    # RQ's heartbeat two seconds on: the scores and TTLs move on alike
    wip = f"rq:wip:{QUEUE}"
    score = connection.zscore(wip, ours.composite_key)
    beat = float(connection.hget(ours.execution_key, "last_heartbeat"))
    time.sleep(2.1)
    worker.maintain_heartbeats(rq_job, execution)
    aconnection = connect_async(redis_url, "test")
    asyncio.run(run(book.keep_alive(aconnection, [ours])))
    beaten_ours, beaten_rq = compare(int(time.time()))
    assert close_enough(beaten_ours, beaten_rq), (beaten_ours, beaten_rq)
    assert connection.zscore(wip, ours.composite_key) >= score + 2
    assert float(connection.hget(ours.execution_key, "last_heartbeat")) >= beat + 2

    # the end: RQ's for the first, the script's (with a record) for its twin
    with connection.pipeline() as pipe:
        execution.delete(rq_job, pipeline=pipe)
        pipe.delete(rq_job.key)
        worker.increment_successful_job_count(pipeline=pipe)
        pipe.execute()
    record = RequestRecord(run_id=run_id, index=1, prompt_id="p", category="c", worker="w", host="h",
                           started_at=1.0, success=True, output_tokens=4)
    aconnection = connect_async(redis_url, "test")

    async def end() -> None:
        async with aconnection.pipeline(transaction=False) as pipe:
            book.queue_end(pipe, [book.end_words(ours, save_record_words(record), True, False)])
            await pipe.execute()

    asyncio.run(run(end()))
    ended_ours, ended_rq = compare(int(time.time()))
    assert close_enough(ended_ours, ended_rq), (ended_ours, ended_rq)
    assert not connection.exists(ours.key, ours.execution_key, rq_job.key, execution.key)
    assert StartedJobRegistry(QUEUE, connection=connection).count == 0
    assert connection.hget(worker.key, "successful_job_count") == b"2"
    assert connection.hget(keys.run_records(run_id), "1") is not None
    assert connection.hget(keys.run_progress(run_id), "done") == b"1"


def test_a_job_that_ends_without_a_record_leaves_no_mark_and_no_count(redis_url):
    """A job not sent (its run's duration was over): its end clears its in-flight mark and RQ's
    keys, stores nothing and moves no counter."""
    connection = redis.Redis.from_url(redis_url)
    run_id, (job_id, _) = two_jobs(connection)
    queue = Queue(QUEUE, connection=connection, serializer=JSONSerializer)
    connection.lmove(queue.key, queue.intermediate_queue_key)
    worker = StreamWorker([QUEUE], connection=connect(redis_url, "test"),
                          async_connection=connect_async(redis_url, "test"), streams=1)
    book = JobBook(worker.name, worker.key, worker.queues, worker.job_monitoring_interval)
    job = RQJob(job_id, worker.queues[0], connection.hgetall(Job.key_for(job_id)))

    async def start_and_end() -> list[bool]:
        aconnection = connect_async(redis_url, "test")
        try:
            started = await book.start(aconnection, [(job, in_flight_words(run_id, InFlight(0, "w", 0, job_id)))])
            assert connection.hexists(keys.run_in_flight(run_id), "0")
            async with aconnection.pipeline(transaction=False) as pipe:
                book.queue_end(pipe, [book.end_words(job, no_record_words(run_id, 0), True, False)])
                await pipe.execute()
            return started
        finally:
            await aconnection.aclose()

    assert asyncio.run(start_and_end()) == [True]
    assert connection.hlen(keys.run_in_flight(run_id)) == 0 and connection.hlen(keys.run_records(run_id)) == 0
    assert not connection.exists(keys.run_progress(run_id), job.key, job.execution_key)
    assert StartedJobRegistry(QUEUE, connection=connection).count == 0
