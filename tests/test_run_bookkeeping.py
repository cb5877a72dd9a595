"""The run's bookkeeping in Redis, in-process: settling a dead worker's requests (LostJobWatch, with
its injectable clock), cancelling a run, listing runs."""

from __future__ import annotations

import fakeredis
import pytest
import redis
from rq import Queue
from rq.serializers import JSONSerializer

from tokenbench.aggregator.lost_jobs import LostJobWatch
from tokenbench.aggregator.runs import list_runs
from tokenbench.producer.cancel import cancel_run
from tokenbench.producer.enqueue import enqueue_run
from tokenbench.producer.prompts import select_prompts
from tokenbench.producer.time_bounds import TimeBounds
from tokenbench.shared import keys
from tokenbench.shared.endpoint import resolve_endpoint
from tokenbench.shared.record_store import InFlight, mark_in_flight, queue_note_sent, read_in_flight
from tokenbench.shared.records import RequestRecord


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _in_flight(connection: redis.Redis, run_id: str, index: int, worker: str) -> None:
    mark_in_flight(connection, run_id, InFlight(index, worker, 0, keys.job_id(run_id, index)))


def _record(connection: redis.Redis, run_id: str, index: int) -> RequestRecord | None:
    raw = connection.hget(keys.run_records(run_id), str(index))
    return None if raw is None else RequestRecord.from_json(raw)


def test_the_sends_of_requests_started_ahead_are_noted_in_one_call_and_a_settled_mark_stays_gone(redis_url):
    """A wave of streams sends as many requests started ahead: their marks become sent in one
    script, across runs; one whose mark is gone meanwhile (its run's lost-job watch settled it)
    is not brought back."""
    connection = redis.Redis.from_url(redis_url)
    unsent = {(run_id, index): InFlight(index, "w", 0, keys.job_id(run_id, index), sent=False)
              for run_id, index in [("a", 0), ("a", 1), ("b", 0), ("b", 1)]}
    for (run_id, _), mark in unsent.items():
        mark_in_flight(connection, run_id, mark)
    connection.hdel(keys.run_in_flight("b"), "1")
    with connection.pipeline(transaction=False) as pipe:
        queue_note_sent(pipe, [(run_id, InFlight(mark.index, "w", 0, mark.job_id))
                               for (run_id, index), mark in unsent.items() if (run_id, index) != ("a", 1)])
        queue_note_sent(pipe, [])  # nothing sent since the last batch: no call
        assert len(pipe) == 1
        pipe.execute()
    assert {(m.index, m.sent) for m in read_in_flight(connection, "a")} == {(0, True), (1, False)}
    assert {(m.index, m.sent) for m in read_in_flight(connection, "b")} == {(0, True)}


@pytest.mark.parametrize("max_retries", [0, 1])
def test_a_dead_workers_request_is_settled_once_and_only_after_a_whole_key_lifetime(redis_url, max_retries):
    connection = redis.Redis.from_url(redis_url)
    meta = enqueue_run(connection, resolve_endpoint("mock", "http://127.0.0.1:9/v1", max_retries=max_retries),
                       select_prompts(3), queue_name="q")
    connection.lpop("rq:queue:q")  # jobs 0 and 1 are taken (0 by a dead worker, 1 by a live one)
    connection.lpop("rq:queue:q")
    connection.set(keys.worker_alive("live:2"), 1)
    _in_flight(connection, meta.run_id, 0, "gone:1")
    _in_flight(connection, meta.run_id, 1, "live:2")
    clock = Clock()
    watch = LostJobWatch(connection, meta, clock)

    watch.check()
    clock.now += keys.WORKER_ALIVE_TTL_S - 0.1
    watch.check()  # not yet: Redis has not been reachable for a whole key lifetime
    assert len(read_in_flight(connection, meta.run_id)) == 2
    clock.now += 0.1
    watch.check()
    assert [entry.index for entry in read_in_flight(connection, meta.run_id)] == [1]  # the live one stays
    if max_retries:
        assert watch.rerun == 1 and _record(connection, meta.run_id, 0) is None
        rerun = Queue("q", connection=connection, serializer=JSONSerializer).get_job_ids()[0]
        assert rerun == keys.job_id(meta.run_id, 0, attempt=1)  # at the front of the queue
    else:
        died = _record(connection, meta.run_id, 0)
        assert watch.declared_dead == 1 and died is not None and died.error_type == "worker_died"
        assert "gone:1" in (died.error or "")
    for _ in range(3):  # never twice, however often it looks
        clock.now += 1.5
        watch.check()
    assert watch.rerun + watch.declared_dead == 1


def test_redis_away_restarts_the_wait_before_anything_is_declared_lost(redis_url):
    connection = redis.Redis.from_url(redis_url)
    meta = enqueue_run(connection, resolve_endpoint("mock", "http://127.0.0.1:9/v1"), select_prompts(1),
                       queue_name="q")
    _in_flight(connection, meta.run_id, 0, "gone:1")
    clock = Clock()
    watch = LostJobWatch(connection, meta, clock)
    clock.now += keys.WORKER_ALIVE_TTL_S - 1
    watch.redis_unreachable()  # the worker's key may have expired only because Redis was away
    clock.now += keys.WORKER_ALIVE_TTL_S - 0.5
    watch.check()
    assert watch.declared_dead == 0 and len(read_in_flight(connection, meta.run_id)) == 1
    clock.now += 0.5
    watch.check()
    assert watch.declared_dead == 1


def test_cancel_removes_only_the_runs_queued_jobs_and_marks_it(redis_url):
    connection = redis.Redis.from_url(redis_url)
    endpoint = resolve_endpoint("mock", "http://127.0.0.1:9/v1")
    first = enqueue_run(connection, endpoint, select_prompts(5), queue_name="shared")
    other = enqueue_run(connection, endpoint, select_prompts(3), queue_name="shared")
    assert cancel_run(connection, first) == 5
    queue = Queue("shared", connection=connection, serializer=JSONSerializer)
    assert queue.get_job_ids() == [keys.job_id(other.run_id, i) for i in range(3)]  # in order, untouched
    assert not connection.exists(*(f"rq:job:{keys.job_id(first.run_id, i)}" for i in range(5)))
    assert connection.exists(keys.run_cancelled(first.run_id)) and not connection.exists(
        keys.run_cancelled(other.run_id))
    assert cancel_run(connection, first) == 0  # twice is harmless


def test_runs_are_listed_newest_first_with_their_status():
    connection = fakeredis.FakeRedis()
    endpoint = resolve_endpoint("mock", "http://127.0.0.1:9/v1")
    waiting = enqueue_run(connection, endpoint, select_prompts(2), run_id="a-waiting")
    running = enqueue_run(connection, endpoint, select_prompts(2), run_id="b-running")
    cancelled = enqueue_run(connection, endpoint, select_prompts(2), run_id="c-cancelled")
    done = enqueue_run(connection, endpoint, select_prompts(1), run_id="d-done")
    ended = enqueue_run(connection, endpoint, select_prompts(3), run_id="e-ended", time_bounds=TimeBounds(1.0))
    for meta, at in ((waiting, 1.0), (running, 2.0), (cancelled, 3.0), (done, 4.0), (ended, 5.0)):
        connection.zadd(keys.RUNS_INDEX, {meta.run_id: at})
    connection.hset(keys.run_in_flight(running.run_id), "0", b"{}")
    connection.set(keys.run_cancelled(cancelled.run_id), 1)
    connection.hset(keys.run_records(done.run_id), "0", b"{}")
    connection.set(keys.run_schedule_start(ended.run_id), 0.0)  # its 1 s ended long ago
    connection.set(keys.run_meta("f-expired"), b"")
    connection.delete(keys.run_meta("f-expired"))
    connection.zadd(keys.RUNS_INDEX, {"f-expired": 6.0})
    listed = list_runs(connection)
    assert [(run["run_id"], run["status"], run["records"], run["total"]) for run in listed] == [
        ("e-ended", "ended", 0, 3), ("d-done", "complete", 1, 1), ("c-cancelled", "cancelled", 0, 2),
        ("b-running", "running", 0, 2), ("a-waiting", "waiting", 0, 2)]
    assert connection.zscore(keys.RUNS_INDEX, "f-expired") is None  # an expired run leaves the index
    assert [run["run_id"] for run in list_runs(connection, limit=2)] == ["e-ended", "d-done"]
