"""What `run` and `report` say while they wait: done, failed, in flight, waiting for headers, workers."""

from __future__ import annotations

import io
import socket
import threading
import time

import fakeredis
import pytest

from tests.helpers import tokenbench
from tokenbench.runner import progress as progress_module
from tokenbench.runner.progress import Progress, header_waits
from tokenbench.shared import keys
from tokenbench.shared.record_store import InFlight


def test_only_fresh_well_formed_counts_of_header_waits_add_up():
    now = 1000.0
    entries = {b"a:1": b"3 999.5", b"b:2": b"2 990.0", b"c:3": b"not ours", b"d:4": b"-4 999.9", b"e:5": b"1 1000.2"}
    assert header_waits(entries, now) == 3 + 1


def test_the_line_shows_requests_in_flight_and_those_waiting_for_headers():
    """In flight: sent; a job a worker started ahead (to send when a stream ends) is not, yet."""
    connection = fakeredis.FakeRedis()
    run_id = "r1"
    connection.hset(keys.run_progress(run_id), mapping={"done": 2, "failed": 1, "output_tokens": 50})
    sent = InFlight(2, "w", 0, "job-2").to_json()
    connection.hset(keys.run_in_flight(run_id), mapping={"2": sent, "3": sent, "4": sent,
                                                         "5": InFlight(5, "w", 0, "job-5", sent=False).to_json()})
    seconds, _ = connection.time()
    connection.hset(keys.run_header_waits(run_id), "host:1", f"2 {seconds}")
    out = io.StringIO()
    Progress(connection, run_id, 5, out).update()
    assert out.getvalue().startswith("[")
    assert "] 2/5 done, 1 failed, 3 in flight (2 waiting for headers), 0 tok/s\n" in out.getvalue()


def test_report_warns_once_when_no_worker_listens_on_the_queue(monkeypatch):
    connection = fakeredis.FakeRedis()
    clock = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    progress = Progress(connection, "r1", 4, out, queue="q1")
    for step in range(12):
        clock[0] = 100.0 + step
        progress.update()
    lines = out.getvalue().splitlines()
    assert "0/4 done, 0 failed, 0 in flight, 0 tok/s, 0 worker(s) on queue 'q1'" in lines[0]
    warnings = [line for line in lines if line.startswith("warning:")]
    assert warnings == ["warning: no worker is listening on queue 'q1': start one with `tokenbench worker --queue q1` "
                        "(and the same --redis-url)"]
    assert lines.index(warnings[0]) == 2  # after 5 s: the lines at 0 s and 5 s, then the warning


@pytest.mark.integration
def test_a_report_waiting_without_workers_says_so(redis_url):
    enqueued = tokenbench("enqueue", "--mode", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
                          "--prompts", "2", "--queue", "nobody-here", "--redis-url", redis_url)
    run_id = enqueued.stdout.strip().splitlines()[-1]
    waited = tokenbench("report", run_id, "--redis-url", redis_url, "--timeout", "7", "--no-save")
    assert waited.returncode == 1
    assert "warning: no worker is listening on queue 'nobody-here'" in waited.stderr
    assert waited.stderr.strip().splitlines()[-1] == "tokenbench: error: 2 of 2 records missing after 7 s"


@pytest.mark.integration
def test_run_shows_requests_that_wait_for_headers(redis_url):
    """A server that accepts connections and never answers: the progress line says so."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = time.monotonic() + 60

    def accept() -> None:
        server.settimeout(0.5)
        while time.monotonic() < stop:
            try:
                held.append(server.accept()[0])
            except OSError:
                continue
    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    port = server.getsockname()[1]
    try:
        ran = tokenbench("run", "--mode", "openai", "--base-url", f"http://127.0.0.1:{port}/v1", "--model", "m",
                         "--prompts", "2", "--concurrency", "2", "--ttft-timeout", "7", "--no-preflight", "--no-save",
                         "--redis-url", redis_url)
    finally:
        stop = 0
        acceptor.join(5)
        server.close()
        for connection in held:
            connection.close()
    assert ran.returncode == 1
    assert "0/2 done, 0 failed, 2 in flight (2 waiting for headers), 0 tok/s" in ran.stderr
    assert "ttft_timeout" in ran.stdout
