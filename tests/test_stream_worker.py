"""The worker process's RQ worker, in this process against the real Redis: many streams at once,
only tokenbench's jobs, cancelled runs, job timeouts, and RQ's registries kept as RQ keeps them."""

from __future__ import annotations

import asyncio
import threading

import aiohttp
import pytest
import redis
from rq import Queue
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from tokenbench.producer.enqueue import enqueue_run
from tokenbench.producer.prompts import BUILTIN_PROMPTS, select_prompts
from tokenbench.shared import keys
from tokenbench.shared.endpoint import Endpoint
from tokenbench.shared.record_store import read_loop_lag
from tokenbench.shared.records import parse_stored_records
from tokenbench.shared.redis_conn import connect, connect_async
from tokenbench.worker.send_turns import SENDS_PER_TURN
from tokenbench.worker.stream_worker import StreamWorker

QUEUE = "test-streams"


def run_worker_until_empty(redis_url: str, streams: int, **options) -> StreamWorker:
    worker = StreamWorker([QUEUE], connection=connect(redis_url, "test"),
                          async_connection=connect_async(redis_url, "test"), streams=streams, **options)
    worker.work(burst=True, logging_level="WARNING")
    return worker


def enqueue(connection: redis.Redis, base_url: str, prompts: int, warmup: int = 0, **endpoint) -> str:
    ep = Endpoint(mode="openai", base_url=base_url + "/v1", model="m", max_tokens=8, **endpoint)
    return enqueue_run(connection, ep, select_prompts(prompts, BUILTIN_PROMPTS), queue_name=QUEUE,
                       warmup=warmup).run_id


def records_of(connection: redis.Redis, run_id: str):
    return parse_stored_records(connection.hvals(keys.run_records(run_id)))


def test_one_process_runs_its_streams_at_once_and_rq_sees_clean_registries(redis_url, mock_server):
    connection = redis.Redis.from_url(redis_url)
    with mock_server(ttft_ms=100, itl_ms=5) as url:
        run_id = enqueue(connection, url, 24)
        run_worker_until_empty(redis_url, streams=8)
    records = records_of(connection, run_id)
    assert sorted(r.index for r in records) == list(range(24)) and all(r.success for r in records)
    assert {r.stream for r in records} == set(range(8))
    assert len({r.worker for r in records}) == 1
    # 8 at a time: the first 8 requests were all sent before the first of them ended.
    first = sorted(records, key=lambda r: r.started_at)[:8]
    assert max(r.started_at for r in first) < min(r.started_at + r.elapsed_ms / 1000 for r in first)
    assert connection.hlen(keys.run_in_flight(run_id)) == 0
    queue = Queue(QUEUE, connection=connection, serializer=JSONSerializer)
    assert queue.count == 0 and connection.llen(queue.intermediate_queue_key) == 0
    assert StartedJobRegistry(QUEUE, connection=connection).count == 0
    assert FailedJobRegistry(QUEUE, connection=connection).count == 0
    assert not connection.exists(*(f"rq:job:{keys.job_id(run_id, i)}" for i in range(24)))  # result_ttl 0
    lag = read_loop_lag(connection, run_id)
    assert list(lag) == [records[0].worker] and sum(lag[records[0].worker]["counts"].values()) > 0
    cpu_wait = lag[records[0].worker]["cpu_wait"]  # the loop thread's schedstat, while requests were in flight
    assert cpu_wait["in_flight_ms"] > 0 and cpu_wait["turns"] > 0 and cpu_wait["wait_ms"] >= 0


def test_each_request_goes_out_before_the_next_one_is_prepared(redis_url, mock_server, monkeypatch):
    """After the warm-up every stream sends at once, and then each batch of jobs does; before Python
    3.12 aiohttp writes a body from a task of its own. Unless the requests take turns, the first
    one's body waits for all the others to be prepared, inside its measured TTFT (send_turns): at
    most SENDS_PER_TURN are prepared before they go out."""
    import tokenbench.worker.stream_worker as stream_worker

    order: list[tuple[str, int]] = []  # ("prepared" | "sent", request number) as aiohttp reports them
    trace = aiohttp.TraceConfig()

    async def prepared(_session, context, _params) -> None:
        context.number = sum(what == "prepared" for what, _ in order)
        order.append(("prepared", context.number))

    async def sent(_session, context, _params) -> None:
        order.append(("sent", context.number))

    trace.on_request_start.append(prepared)
    trace.on_request_chunk_sent.append(sent)
    monkeypatch.setattr(stream_worker, "new_session", lambda _ssl: aiohttp.ClientSession(trace_configs=[trace]))
    connection = redis.Redis.from_url(redis_url)
    with mock_server(ttft_ms=100, itl_ms=1) as url:
        run_id = enqueue(connection, url, 24, warmup=1)
        run_worker_until_empty(redis_url, streams=8)
    assert len(records_of(connection, run_id)) == 24
    # The 8 warm-up requests open the connections (a connect is a wait of its own); then the 24
    # measured ones, over open connections: a few prepared, those sent, the next few prepared, ...
    measured = [(what, number) for what, number in order if number >= 8]
    unsent: set[int] = set()
    for what, number in measured:
        if what == "prepared":
            assert len(unsent) < SENDS_PER_TURN, \
                f"request {number} was prepared while {sorted(unsent)} waited to go out: {measured}"
            unsent.add(number)
        else:
            unsent.discard(number)
    assert not unsent and sum(what == "prepared" for what, _ in measured) == 24


@pytest.mark.parametrize("function, args", [
    ("os.system", ["echo owned > {marker}"]),
    ("tokenbench.producer.enqueue.new_run_id", []),  # importable and ours, but not the entry point
    (keys.JOB_FUNCTION, ["not a job spec"]),
])
def test_a_job_that_is_not_a_tokenbench_request_is_refused_before_anything_runs(function, args, redis_url,
                                                                               tmp_path):
    connection = redis.Redis.from_url(redis_url)
    marker = tmp_path / "marker"
    queue = Queue(QUEUE, connection=connection, serializer=JSONSerializer)
    job = queue.enqueue(function, *[a.format(marker=marker) for a in args])
    run_worker_until_empty(redis_url, streams=2)
    assert not marker.exists()
    failed = FailedJobRegistry(QUEUE, connection=connection, serializer=JSONSerializer)
    assert failed.get_job_ids() == [job.id]
    job.refresh()
    assert "refused by tokenbench worker" in job.latest_result().exc_string


def test_a_job_of_a_cancelled_run_is_skipped(redis_url, mock_server):
    connection = redis.Redis.from_url(redis_url)
    with mock_server(ttft_ms=1, itl_ms=1) as url:
        run_id = enqueue(connection, url, 3)
        connection.set(keys.run_cancelled(run_id), 1)
        run_worker_until_empty(redis_url, streams=2)
    assert connection.hlen(keys.run_records(run_id)) == 0 and connection.hlen(keys.run_in_flight(run_id)) == 0
    assert StartedJobRegistry(QUEUE, connection=connection).count == 0


@pytest.mark.integration
def test_rqs_job_timeout_ends_the_request_with_a_record_saying_so(redis_url, mock_server, monkeypatch):
    connection = redis.Redis.from_url(redis_url)
    with mock_server(ttft_ms=1, itl_ms=1, fault="hang") as url:
        run_id = enqueue(connection, url, 1)
        job_key = f"rq:job:{keys.job_id(run_id, 0)}"
        connection.hset(job_key, "timeout", 1)  # RQ's backstop, far below the request's own deadlines
        run_worker_until_empty(redis_url, streams=1)
    [record] = records_of(connection, run_id)
    assert (record.success, record.error_type) == (False, "job_timeout")
    assert FailedJobRegistry(QUEUE, connection=connection).count == 1


def test_a_long_request_is_kept_alive_in_rqs_started_registry(redis_url, mock_server):
    """RQ takes a started job whose execution outlives its heartbeat TTL for abandoned (``rq info``
    then moves it to the FailedJobRegistry, mid-request): the worker beats for its running jobs every
    job monitoring interval, as RQ's own worker does (here 1 s instead of 30)."""
    connection = redis.Redis.from_url(redis_url)
    scores: list[float] = []  # the job's score in RQ's StartedJobRegistry, while it runs
    watching = threading.Event()

    def watch() -> None:
        watcher = redis.Redis.from_url(redis_url)
        while not watching.wait(0.1):
            scores.extend(score for _, score in watcher.zrange(f"rq:wip:{QUEUE}", 0, -1, withscores=True))

    with mock_server(ttft_ms=2500, itl_ms=1) as url:
        run_id = enqueue(connection, url, 1)
        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            run_worker_until_empty(redis_url, streams=1, job_monitoring_interval=1)
        finally:
            watching.set()
            watcher.join()
    [record] = records_of(connection, run_id)
    assert record.success
    assert scores and max(scores) > scores[0]
    assert FailedJobRegistry(QUEUE, connection=connection).count == 0


def test_the_worker_writes_no_record_twice_when_its_batch_is_retried(redis_url):
    """The finish round trip stores a record once and counts it once, however often it is sent."""
    from tokenbench.shared.record_store import queue_save_record
    from tokenbench.shared.records import RequestRecord

    record = RequestRecord(run_id="r", index=0, prompt_id="p", category="c", worker="w", host="h", started_at=1.0,
                           success=True, output_tokens=4)

    async def save_twice() -> list[int]:
        client = connect_async(redis_url, "test")
        replies = []
        for _ in range(2):
            async with client.pipeline(transaction=False) as pipe:
                queue_save_record(pipe, record)
                replies += await pipe.execute()
        await client.aclose()
        return replies

    assert asyncio.run(save_twice()) == [1, 0]
    connection = redis.Redis.from_url(redis_url)
    assert connection.hget(keys.run_progress("r"), "done") == b"1"


def key_seeing_server(seen: list[str | None]):
    """A chat-completions server that notes each request's Authorization header and streams one token."""
    from aiohttp import web

    async def handler(request):
        seen.append(request.headers.get("Authorization"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"choices":[{"delta":{"content":"a"},"finish_reason":"stop"}]}\n\n'
                             b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    return app


def worker_with(redis_url: str, secret: bytes | None = None, key_hosts: frozenset[str] | None = None) -> StreamWorker:
    from tokenbench.worker.job import PRESET_HOSTS

    worker = StreamWorker([QUEUE], connection=connect(redis_url, "test"),
                          async_connection=connect_async(redis_url, "test"), streams=2, secret=secret,
                          key_hosts=key_hosts if key_hosts is not None else PRESET_HOSTS)
    worker.work(burst=True, logging_level="WARNING")
    return worker


@pytest.mark.parametrize("signed_with, runs", [(b"the-secret", True), (b"another-secret", False), (None, False)])
def test_with_a_secret_only_jobs_signed_with_it_run(signed_with, runs, redis_url, monkeypatch):
    from tests.conftest import serve_app

    monkeypatch.setenv("TOKENBENCH_API_KEY", "sk-worker-key")
    connection = redis.Redis.from_url(redis_url)
    seen: list[str | None] = []
    with serve_app(key_seeing_server(seen)) as url:
        ep = Endpoint(mode="openai", base_url=url + "/v1", model="m", max_tokens=4)
        run_id = enqueue_run(connection, ep, select_prompts(2, BUILTIN_PROMPTS), queue_name=QUEUE,
                             secret=signed_with).run_id
        worker_with(redis_url, secret=b"the-secret")
    failed = FailedJobRegistry(QUEUE, connection=connection, serializer=JSONSerializer)
    if runs:  # a signed job's host is the producer's choice: the key goes there
        assert connection.hlen(keys.run_records(run_id)) == 2 and seen == ["Bearer sk-worker-key"] * 2
        assert failed.count == 0
    else:
        assert seen == [] and connection.hlen(keys.run_records(run_id)) == 0 and failed.count == 2
        reason = failed.get_job_ids()[0]
        job = Queue(QUEUE, connection=connection, serializer=JSONSerializer).fetch_job(reason)
        assert "TOKENBENCH_SECRET" in job.latest_result().exc_string


def test_without_a_secret_the_key_goes_only_to_allowed_hosts(redis_url, monkeypatch):
    from tests.conftest import serve_app

    monkeypatch.setenv("TOKENBENCH_API_KEY", "sk-worker-key")
    connection = redis.Redis.from_url(redis_url)
    seen: list[str | None] = []
    with serve_app(key_seeing_server(seen)) as url:
        ep = Endpoint(mode="openai", base_url=url + "/v1", model="m", max_tokens=4)
        foreign = enqueue_run(connection, ep, select_prompts(1, BUILTIN_PROMPTS), queue_name=QUEUE).run_id
        worker_with(redis_url)  # 127.0.0.1 is not a preset's host: the request goes out without the key
        allowed = enqueue_run(connection, ep, select_prompts(1, BUILTIN_PROMPTS), queue_name=QUEUE).run_id
        worker_with(redis_url, key_hosts=frozenset({"127.0.0.1"}))
    assert seen == [None, "Bearer sk-worker-key"]
    assert all(connection.hlen(keys.run_records(run)) == 1 for run in (foreign, allowed))
