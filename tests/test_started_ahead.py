"""Jobs a worker starts ahead: a stream that ends sends its next request with no Redis round trip
between, only while the queue holds more jobs than its workers have streams; a stopping worker
gives them back, a killed one's are sent by another worker, none lost or sent twice."""

from __future__ import annotations

import asyncio
import signal

import pytest
import redis
from rq import Queue
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from tests.helpers import enqueue as enqueue_cli
from tests.helpers import load, mock_server_process, tokenbench, wait_for, worker_pool
from tests.test_stream_worker import QUEUE, enqueue, records_of, run_worker_until_empty
from tokenbench.shared import keys
from tokenbench.shared.record_store import read_in_flight
from tokenbench.shared.redis_conn import connect, connect_async
from tokenbench.worker import stream_worker
from tokenbench.worker.stream_worker import StreamWorker


def test_a_stream_sends_its_next_request_without_a_redis_round_trip_in_between(redis_url, mock_server,
                                                                                monkeypatch):
    """One stream, six requests: while more stay queued than there are streams, the next job is
    started ahead, and the stream's next send follows its last end with no take or start of a job
    between (both are scripts: commands of the client, not of a pipeline)."""
    events: list[tuple[str, int]] = []
    real_run_job = stream_worker.run_job

    async def logged_run_job(process, spec, *args, **kwargs):
        events.append(("send", spec.index))
        record = await real_run_job(process, spec, *args, **kwargs)
        events.append(("end", spec.index))
        return record

    real_execute = stream_worker.Redis.execute_command

    async def logged_execute(self, *args, **options):
        events.append(("redis", -1))
        return await real_execute(self, *args, **options)

    monkeypatch.setattr(stream_worker, "run_job", logged_run_job)
    monkeypatch.setattr(stream_worker.Redis, "execute_command", logged_execute)
    connection = redis.Redis.from_url(redis_url)
    with mock_server(ttft_ms=100, itl_ms=5) as url:
        run_id = enqueue(connection, url, 6)
        run_worker_until_empty(redis_url, streams=1)
    records = records_of(connection, run_id)
    assert sorted(r.index for r in records) == list(range(6)) and all(r.success for r in records)
    requests = [(what, index) for what, index in events if what != "redis"]
    assert requests == [(what, index) for index in range(6) for what in ("send", "end")]  # one at a time
    between = []  # for each end: did the worker talk to Redis before the next send?
    for index in range(5):
        end, send = events.index(("end", index)), events.index(("send", index + 1))
        between.append(any(what == "redis" for what, _ in events[end:send]))
    # Jobs 1-4 were started ahead (5, 4, 3, 2 left queued > 1 stream); the last was not (1 left).
    assert between == [False, False, False, False, True]
    assert connection.hlen(keys.run_in_flight(run_id)) == 0
    assert StartedJobRegistry(QUEUE, connection=connection).count == 0


def test_jobs_are_taken_ahead_only_while_more_stay_queued_than_the_queues_workers_have_streams(redis_url,
                                                                                                mock_server):
    """Near a run's end a job held ahead would wait a whole request for its stream while another
    worker's streams found the queue empty: the take stops starting ahead there."""
    connection = redis.Redis.from_url(redis_url)
    with mock_server(ttft_ms=1, itl_ms=1) as url:
        enqueue(connection, url, 10)
    # Another worker of the queue with 3 streams, and an RQ worker of its own kind (one job at a time).
    connection.sadd(WORKERS_BY_QUEUE_KEY % QUEUE, "rq:worker:ours", "rq:worker:plain-rq", "rq:worker:gone")
    connection.hset("rq:worker:ours", "streams", 3)
    connection.hset("rq:worker:plain-rq", "state", "idle")
    worker = StreamWorker([QUEUE], connection=connect(redis_url, "test"),
                          async_connection=connect_async(redis_url, "test"), streams=2)

    async def take(count: int, ahead: int) -> int:
        taken = await worker._take(count, ahead, block=False)
        await worker._aredis.aclose()
        return len(taken)

    # 10 queued, 4 streams on the queue: 2 taken for free streams, then ahead while > 4 stay: 8, 7, 6, 5.
    assert asyncio.run(take(2, 10)) == 6
    assert connection.llen(Queue(QUEUE, connection=connection).key) == 4
    assert asyncio.run(take(0, 10)) == 0  # 4 left, not more than the 4 streams: none ahead
    assert asyncio.run(take(1, 10)) == 1  # a free stream still gets its job
    assert connection.llen(Queue(QUEUE, connection=connection, serializer=JSONSerializer).intermediate_queue_key) \
        == 7


@pytest.mark.integration
def test_a_stopping_worker_gives_its_jobs_started_ahead_back_in_order(redis_url):
    connection = redis.Redis.from_url(redis_url)
    queue = Queue("ahead-stop", connection=connection)
    with mock_server_process("--ttft-ms", "50", "--itl-ms", "100") as mock_url:
        with worker_pool(redis_url, "ahead-stop", 1) as pool:
            run_id = enqueue_cli(redis_url, mock_url, "ahead-stop", "--prompts", "4", "--max-tokens", "20")
            wait_for(lambda: len(read_in_flight(connection, run_id)) == 2, "a request in flight and one ahead")
            [ahead] = [entry for entry in read_in_flight(connection, run_id) if not entry.sent]
            assert ahead.index == 1
            pool.send_signal(signal.SIGTERM)
            pool.wait(15)
        assert [int(job_id.decode().rpartition("-")[2]) for job_id in connection.lrange(queue.key, 0, -1)] \
            == [1, 2, 3]
        assert connection.hlen(keys.run_in_flight(run_id)) == 0
        assert StartedJobRegistry("ahead-stop", connection=connection).count == 0
        assert connection.llen(queue.intermediate_queue_key) == 0
        assert sorted(r.index for r in records_of(connection, run_id)) == [0]  # the one in flight finished
        with worker_pool(redis_url, "ahead-stop", 1):
            wait_for(lambda: connection.hlen(keys.run_records(run_id)) == 4, "the other 3 records", 30)
    records = records_of(connection, run_id)
    assert sorted(r.index for r in records) == [0, 1, 2, 3] and all(r.success for r in records)
    assert all(r.attempt == 0 for r in records)


@pytest.mark.integration
def test_a_killed_worker_s_job_started_ahead_is_sent_by_another_worker_as_the_same_attempt(redis_url, tmp_path):
    """No retries allowed: the request in flight is ``worker_died``; the one started ahead was never
    sent, so it is no retry, and another worker sends it."""
    connection = redis.Redis.from_url(redis_url)
    out = tmp_path / "r.json"
    with mock_server_process("--ttft-ms", "50", "--itl-ms", "100") as mock_url:
        with worker_pool(redis_url, "ahead-kill", 1):
            run_id = enqueue_cli(redis_url, mock_url, "ahead-kill", "--prompts", "3", "--max-tokens", "20",
                                 "--max-retries", "0")
            wait_for(lambda: len(read_in_flight(connection, run_id)) == 2, "a request in flight and one ahead")
            marks = {entry.sent: entry for entry in read_in_flight(connection, run_id)}
        # the pool and its worker were killed on the way out (SIGKILL to its process group)
        with worker_pool(redis_url, "ahead-kill", 1):
            report = tokenbench("report", run_id, "--redis-url", redis_url, "--timeout", "60", "--output", str(out),
                                "--max-error-rate", "1")
    assert report.returncode == 0, report.stderr
    result = load(out)
    by_index = {r["index"]: r for r in result["results"]}
    assert sorted(by_index) == [0, 1, 2] and len(result["results"]) == 3  # one record each
    died, ahead = by_index[marks[True].index], by_index[marks[False].index]
    assert died["error_type"] == "worker_died"
    assert ahead["success"] and ahead["attempt"] == 0 and ahead["worker"] != marks[False].worker
    assert connection.hlen(keys.run_in_flight(run_id)) == 0
