"""Faults injected for real (the mock server's fault switches, signals, a Redis restart) through real
worker processes: every failure is a record with its own type, within a stated bound.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import redis

from tests.conftest import free_port
from tests.helpers import (
    clean_env,
    enqueue,
    load,
    mock_server_process,
    tokenbench,
    tokenbench_in_process,
    wait_for,
    worker_pool,
)
from tokenbench.mock import FAULT_ERROR_TYPES, FAULTS
from tokenbench.runner.embedded_redis import find_redis_server
from tokenbench.shared.keys import WORKER_ALIVE_TTL_S
from tokenbench.shared.record_store import InFlight, read_in_flight
from tokenbench.shared.records import RequestRecord

pytestmark = pytest.mark.integration

# fault -> (the error type its requests must get, run flags that bound it)
FAULT_CASES = {
    "hang": ("ttft_timeout", ["--ttft-timeout", "1", "--idle-timeout", "0.5"]),
    "stall": ("idle_timeout", ["--ttft-timeout", "5", "--idle-timeout", "0.5"]),
    "drop": ("connection_closed", []),
    "garbage": ("malformed_chunk", []),
}


@pytest.mark.parametrize("fault", sorted(FAULT_CASES))
def test_each_server_fault_is_a_failed_record_of_its_own_type(fault, redis_url, tmp_path):
    error_type, flags = FAULT_CASES[fault]
    out = tmp_path / "r.json"
    result = tokenbench("run", "--mode", "mock", "--prompts", "4", "--concurrency", "2", "--max-tokens", "8",
                        "--mock-ttft-ms", "5", "--mock-itl-ms", "5", "--mock-fault", fault,
                        "--mock-fault-rate", "0.5", "--mock-fault-after", "2", "--redis-url", redis_url,
                        "--output", str(out), "--max-error-rate", "0.5", *flags)
    assert result.returncode == 0, result.stderr  # complete, and no more than half failed
    report = load(out)
    assert (report["successful_runs"], report["failed_runs"], report["complete"]) == (2, 2, True)
    failed = [r for r in report["results"] if not r["success"]]
    assert {r["error_type"] for r in failed} == {error_type}
    assert report["errors"][error_type]["count"] == 2
    for record in failed:
        if fault == "hang":  # nothing at all: the TTFT deadline, not the 0.5 s idle one
            assert record["output_tokens"] == 0 and 1000 <= record["elapsed_ms"] < 1000 + 4000
        else:  # the fault came after two tokens, which are still recorded
            assert record["output_tokens"] == 2
        if fault == "stall":
            assert 500 <= record["elapsed_ms"] - record["latency_ms"] < 5000  # the idle deadline, not the TTFT one


def wait_in_flight(connection: redis.Redis, run_id: str, count: int) -> list[InFlight]:
    wait_for(lambda: len(read_in_flight(connection, run_id)) >= count, f"{count} requests are in flight")
    return read_in_flight(connection, run_id)


def worker_pid(entry: InFlight) -> int:
    return int(entry.worker.rpartition(":")[2])


@pytest.mark.parametrize("max_retries", [0, 1])
def test_a_sigkilled_worker_s_request_is_settled_within_the_liveness_bound(max_retries, redis_url, tmp_path):
    connection = redis.Redis.from_url(redis_url)
    out = tmp_path / "r.json"
    # 4 requests of ~2 s each on 2 workers: one worker is killed in the middle of its first request.
    with mock_server_process("--ttft-ms", "50", "--itl-ms", "100") as mock_url, \
            worker_pool(redis_url, "kill-test", 2):
        run_id = enqueue(redis_url, mock_url, "kill-test", "--prompts", "4", "--max-tokens", "20",
                         "--max-retries", str(max_retries))
        victim = next(entry for entry in wait_in_flight(connection, run_id, 2) if entry.sent)
        time.sleep(0.5)
        os.kill(worker_pid(victim), signal.SIGKILL)
        killed_at = time.monotonic()
        report = tokenbench("report", run_id, "--redis-url", redis_url, "--timeout", "30", "--output", str(out),
                            "--max-error-rate", "1")
        settled_after = time.monotonic() - killed_at
    assert report.returncode == 0, report.stderr
    result = load(out)
    assert result["complete"] is True and len(result["results"]) == 4
    assert sorted(r["index"] for r in result["results"]) == [0, 1, 2, 3]  # exactly one record each
    victim_record = next(r for r in result["results"] if r["index"] == victim.index)
    if max_retries:
        assert result["successful_runs"] == 4
        assert victim_record["attempt"] == 1 and victim_record["worker"] != victim.worker
    else:
        assert result["successful_runs"] == 3
        assert victim_record["error_type"] == "worker_died" and victim.worker in victim_record["error"]
    # The stated bound: the liveness key's lifetime plus one check, then the rest of the run.
    assert settled_after < WORKER_ALIVE_TTL_S + 1 + 2 * 2.2 + 3
    assert connection.hlen(f"tokenbench:run:{run_id}:in_flight") == 0


def test_first_sigterm_lets_the_request_finish_second_one_stops_it(redis_url):
    connection = redis.Redis.from_url(redis_url)
    with mock_server_process("--ttft-ms", "50", "--itl-ms", "100") as mock_url:
        # Warm: one SIGTERM while a 2 s request is in flight; it finishes and is a success.
        with worker_pool(redis_url, "warm-test", 1) as pool:
            run_id = enqueue(redis_url, mock_url, "warm-test", "--prompts", "1", "--max-tokens", "20")
            wait_in_flight(connection, run_id, 1)
            pool.send_signal(signal.SIGTERM)
            pool.wait(15)
        record = RequestRecord.from_json(connection.hget(f"tokenbench:run:{run_id}:records", "0"))
        assert record.success and record.output_tokens == 20
        # Cold: a second signal more than a second later stops the request and says so in its record.
        with worker_pool(redis_url, "cold-test", 1) as pool:
            run_id = enqueue(redis_url, mock_url, "cold-test", "--prompts", "1", "--max-tokens", "50")
            wait_in_flight(connection, run_id, 1)
            pool.send_signal(signal.SIGTERM)
            time.sleep(1.5)
            pool.send_signal(signal.SIGTERM)
            started = time.monotonic()
            pool.wait(15)
            assert time.monotonic() - started < 3
        record = RequestRecord.from_json(connection.hget(f"tokenbench:run:{run_id}:records", "0"))
        assert (record.success, record.error_type) == (False, "worker_stopped")


@contextmanager
def redis_server_on(port: int, data_dir: Path) -> Iterator[subprocess.Popen]:
    """A redis-server that logs every write to an append-only file, so a restart keeps the data."""
    server = subprocess.Popen([find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "yes", "--appendfsync", "always", "--dir", str(data_dir)],
                              stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield server
    finally:
        server.terminate()
        server.wait(10)


def test_redis_restarted_mid_run_loses_no_record(tmp_path):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    out = tmp_path / "r.json"
    with mock_server_process("--ttft-ms", "50", "--itl-ms", "50") as mock_url, \
            worker_pool(url, "restart-test", 2):
        with redis_server_on(port, tmp_path) as first:
            run_id = enqueue(url, mock_url, "restart-test", "--prompts", "8", "--max-tokens", "20")
            report = subprocess.Popen([sys.executable, "-m", "tokenbench", "report", run_id, "--redis-url", url,
                                       "--timeout", "60", "--output", str(out)], env=clean_env(),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            connection = redis.Redis(port=port)
            wait_for(lambda: any(c["name"] == "tokenbench:report" for c in connection.client_list()),
                     "report is waiting")
            wait_in_flight(connection, run_id, 2)
            first.terminate()  # while two requests are in flight and four are queued
            first.wait(10)
            time.sleep(2)
        with redis_server_on(port, tmp_path):
            _stdout, stderr = report.communicate(timeout=90)
    assert report.returncode == 0, stderr
    result = load(out)
    assert result["complete"] is True
    assert (result["successful_runs"], len(result["results"])) == (8, 8)


def test_a_long_redis_outage_turns_no_finished_measurement_into_a_failure(tmp_path):
    """Issue 15: an outage of over 60 s while requests finished used to lose their records (the worker
    gave up saving after 60 s) and the report then counted them failed. Here Redis is gone for 8 s
    while four requests finish: longer than a worker's liveness key lives (it expires meanwhile) and
    than the worker's longest pause between tries; and the worker's clock for how long Redis has been
    away runs 30 times fast, so to it the outage lasts 240 s, four times the old bound."""
    from tokenbench.shared.redis_conn import connect, connect_async
    from tokenbench.worker.stream_worker import REDIS_GONE_S, SAVE_RETRY_S, StreamWorker

    outage_s, clock_rate = 8.0, 30.0
    assert 60 < outage_s * clock_rate < min(SAVE_RETRY_S, REDIS_GONE_S) and outage_s > WORKER_ALIVE_TTL_S
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    out = tmp_path / "r.json"
    origin = time.monotonic()
    servers: list[subprocess.Popen] = []
    with ExitStack() as stack, mock_server_process("--ttft-ms", "50", "--itl-ms", "100") as mock_url:
        servers.append(stack.enter_context(redis_server_on(port, tmp_path)))
        run_id = enqueue(url, mock_url, "outage-test", "--prompts", "8", "--max-tokens", "20")
        report = stack.enter_context(subprocess.Popen(
            [sys.executable, "-m", "tokenbench", "report", run_id, "--redis-url", url, "--timeout", "120",
             "--output", str(out)], env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        connection = redis.Redis(port=port)
        stack.callback(connection.close)
        # The report's first contact must come before the outage (a Redis it never reached is an error
        # at once): the requests start once it is connected.
        wait_for(lambda: any(client["name"] == "tokenbench:report" for client in connection.client_list()),
                 "the report is connected")

        def cut_redis_while_four_requests_run() -> None:
            wait_in_flight(connection, run_id, 4)
            time.sleep(0.3)  # each has its first tokens; it ends ~1.7 s later, with Redis gone
            servers[0].terminate()
            servers[0].wait(10)
            time.sleep(outage_s)
            servers.append(stack.enter_context(redis_server_on(port, tmp_path)))

        outage = threading.Thread(target=cut_redis_while_four_requests_run, daemon=True)
        outage.start()
        worker = StreamWorker(["outage-test"], connection=connect(url, "test"),
                              async_connection=connect_async(url, "test"), streams=4,
                              monotonic=lambda: origin + (time.monotonic() - origin) * clock_rate)
        worker.work(burst=True, logging_level="WARNING")  # until the queue is empty, outage or not
        outage.join(30)
        _stdout, stderr = report.communicate(timeout=90)
    assert len(servers) == 2, "the outage did not happen while the worker ran"
    assert report.returncode == 0, stderr
    result = load(out)
    assert (result["complete"], result["successful_runs"], result["failed_runs"]) == (True, 8, 0)
    assert sorted(r["index"] for r in result["results"]) == list(range(8))
    assert all(r["output_tokens"] == 20 for r in result["results"])


def test_a_worker_whose_redis_never_comes_back_gives_up_in_one_line(tmp_path, caplog):
    """Redis gone for good: after REDIS_GONE_S with nothing in flight the worker stops (exit 1 in a
    pool), saying so once, and its exit is no traceback though RQ's sign-off cannot reach Redis. The
    worker's outage clock runs 100 times fast: 300 s pass in ~3 s."""
    from tokenbench.shared.redis_conn import connect, connect_async
    from tokenbench.worker.stream_worker import StreamWorker

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    origin = time.monotonic()
    with redis_server_on(port, tmp_path) as server:
        worker = StreamWorker(["gone-test"], connection=connect(url, "test"),
                              async_connection=connect_async(url, "test"), streams=2,
                              monotonic=lambda: origin + (time.monotonic() - origin) * 100)
        threading.Timer(1.0, server.terminate).start()
        started = time.monotonic()
        worker.work(burst=False, logging_level="WARNING")  # returns: no exception out of RQ's teardown
    assert worker.gave_up and time.monotonic() - started < 30
    stopping = [r.getMessage() for r in caplog.records if "stopping" in r.getMessage()]
    assert len(stopping) == 1 and "Redis unreachable for" in stopping[0]
    assert any("could not sign off in Redis" in r.getMessage() for r in caplog.records)


def test_cancel_removes_pending_jobs_and_the_report_says_so(redis_url, tmp_path):
    connection = redis.Redis.from_url(redis_url)
    out = tmp_path / "r.json"
    # The request in flight lasts ~3 s: a stream that ends within a heartbeat of the cancel may still
    # send the job it started ahead (docs/failure-semantics.md), and the cancel runs in this process
    # (no interpreter start-up), so the worker's next heartbeat drops that job first, busy machine or not.
    with mock_server_process("--ttft-ms", "50", "--itl-ms", "150") as mock_url, \
            worker_pool(redis_url, "cancel-test", 1):
        run_id = enqueue(redis_url, mock_url, "cancel-test", "--prompts", "5", "--max-tokens", "20")
        # one stream: its request and the next, started ahead (more stay queued than there are streams)
        wait_in_flight(connection, run_id, 2)
        cancelled = tokenbench_in_process("cancel", run_id, "--redis-url", redis_url)
        assert cancelled.returncode == 0, cancelled.stderr
        assert "removed 3 pending job(s)" in cancelled.stdout
        assert "workers drop the 1 they had started ahead, unsent" in cancelled.stdout
        started = time.monotonic()
        report = tokenbench("report", run_id, "--redis-url", redis_url, "--timeout", "60", "--output", str(out))
        assert time.monotonic() - started < 10  # waits for the request in flight only
    assert report.returncode == 1
    assert f"run {run_id} was cancelled: 4 of 5 requests were not run" in report.stderr
    result = load(out)
    assert (result["cancelled"], result["complete"], result["successful_runs"]) == (True, False, 1)
    assert [m["index"] for m in result["missing"]] == [1, 2, 3, 4]
    assert connection.llen("rq:queue:cancel-test") == 0


def test_cancel_of_an_unknown_run_is_a_one_line_error(redis_url):
    result = tokenbench("cancel", "no-such-run", "--redis-url", redis_url)
    assert result.returncode == 1
    assert result.stderr.strip() == "tokenbench: error: unknown run id 'no-such-run': no such run in this Redis"


def test_two_runs_at_once_on_one_redis_never_mix(redis_url, tmp_path):
    with mock_server_process("--ttft-ms", "5", "--itl-ms", "5") as mock_url:
        # Two runs on one shared queue, served by the same workers...
        with worker_pool(redis_url, "shared-queue", 2):
            run_a = enqueue(redis_url, mock_url, "shared-queue", "--prompts", "6", "--max-tokens", "5")
            run_b = enqueue(redis_url, mock_url, "shared-queue", "--prompts", "9", "--max-tokens", "7")
            for run_id, n, tokens in ((run_a, 6, 5), (run_b, 9, 7)):
                out = tmp_path / f"{run_id}.json"
                report = tokenbench("report", run_id, "--redis-url", redis_url, "--timeout", "60",
                                    "--output", str(out))
                assert report.returncode == 0, report.stderr
                result = load(out)
                assert (result["successful_runs"], result["total_output_tokens"]) == (n, n * tokens)
        # ...and two `tokenbench run`s started together, each with its own workers and queue.
        runs = [subprocess.Popen([sys.executable, "-m", "tokenbench", "run", "--mode", "openai", "--base-url",
                                  mock_url + "/v1", "--model", "m", "--concurrency", "2", "--prompts", str(n),
                                  "--max-tokens", str(tokens), "--redis-url", redis_url,
                                  "--output", str(tmp_path / f"run{n}.json")],
                                 env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                for n, tokens in ((8, 3), (12, 4))]
        for run in runs:
            _out, stderr = run.communicate(timeout=60)
            assert run.returncode == 0, stderr
    for n, tokens in ((8, 3), (12, 4)):
        result = load(tmp_path / f"run{n}.json")
        assert (result["successful_runs"], result["complete"]) == (n, True)
        assert {r["output_tokens"] for r in result["results"]} == {tokens}
        assert len(result["workers"]) == 2


@pytest.mark.integration
def test_run_stops_soon_after_its_embedded_redis_dies_and_says_so(tmp_path):
    import uuid

    from tests.helpers import EmbeddedRedis

    marker = uuid.uuid4().hex
    out = tmp_path / "r.json"
    run = subprocess.Popen(
        [sys.executable, "-m", "tokenbench", "run", "--mode", "mock", "--concurrency", "2", "--prompts", "20",
         "--max-tokens", "100", "--mock-itl-ms", "50", "--output", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(TOKENBENCH_TEST_MARKER=marker))

    embedded = EmbeddedRedis(run.pid)
    wait_for(lambda: embedded.counts()[1] >= 1, "requests are in flight", timeout_s=60)
    os.kill(embedded.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    stdout, stderr = run.communicate(timeout=60)
    took = time.monotonic() - killed_at
    assert run.returncode == 1, stderr
    assert "the embedded Redis stopped answering" in stderr and "Traceback" not in stderr
    assert took < 30  # 5 s of silence, then the workers' warm shutdown (5 s at most), on a busy machine
    report = load(out)
    assert report["interrupted"] is True and "embedded Redis" in report["interrupted_reason"]
    assert report["complete"] is False


def test_a_waiting_report_says_when_the_runs_data_is_gone():
    import fakeredis

    from tokenbench.aggregator.collect import wait_for_records
    from tokenbench.shared import keys
    from tokenbench.shared.errors import TokenbenchError
    from tokenbench.shared.records import RunMeta

    connection = fakeredis.FakeRedis()
    meta = RunMeta(run_id="gone", mode="mock", model="m", base_url="http://h/v1", max_tokens=8, num_prompts=40,
                   queue="q", created_at=0.0, prompt_ids=["p"] * 40, tokenbench_version="0")
    connection.set(keys.run_meta("gone"), meta.to_json())
    polls = []

    def restarted_without_persistence(_seconds: float) -> None:
        polls.append(1)
        if len(polls) == 3:
            connection.flushall()

    with pytest.raises(TokenbenchError, match="the data of run gone is gone from Redis"):
        wait_for_records(connection, meta, 60, sleep=restarted_without_persistence)
    assert len(polls) == 3


def test_a_mix_of_every_fault_loses_doubles_and_mistypes_nothing(redis_url, tmp_path):
    """The soak of benchmarks/soak.py, small: every mock fault in turn among 320 requests."""
    out = tmp_path / "r.json"
    result = tokenbench("run", "--mode", "mock", "--prompts", "320", "--concurrency", "32", "--max-tokens", "8",
                        "--mock-ttft-ms", "2", "--mock-itl-ms", "1", "--mock-fault", ",".join(FAULTS),
                        "--mock-fault-rate", "0.1", "--mock-fault-after", "2", "--ttft-timeout", "1",
                        "--idle-timeout", "0.5", "--max-error-rate", "1", "--redis-url", redis_url,
                        "--output", str(out), timeout=240)
    assert result.returncode == 0, result.stderr
    report = load(out)
    indices = sorted(r["index"] for r in report["results"])
    assert indices == list(range(320)) and report["complete"]
    expected: dict[str, int] = {}
    for fault in FAULT_ERROR_TYPES.values():
        expected[fault] = expected.get(fault, 0) + 4  # 32 faults, 8 kinds in turn
    assert {name: entry["count"] for name, entry in report["errors"].items()} == expected
    assert all(r["output_tokens"] == 8 for r in report["results"] if r["success"])
