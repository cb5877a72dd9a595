"""One request measured by the worker code against real HTTP servers on loopback."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

import orjson
import pytest
import redis
from aiohttp import web

from tests.conftest import free_port, serve_app
from tokenbench.shared import keys
from tokenbench.shared.endpoint import Endpoint
from tokenbench.shared.record_store import save_record
from tokenbench.shared.records import TOKENS_FROM_CHUNKS, TOKENS_FROM_USAGE, JobSpec, RequestRecord
from tokenbench.worker.job import new_session
from tokenbench.worker.measure import build_request_body, measure_request, parse_retry_after


def spec_for(base_url: str, max_tokens: int = 8, **endpoint) -> JobSpec:
    ep = Endpoint(mode="openai", base_url=base_url + "/v1", model="m", max_tokens=max_tokens, **endpoint)
    return JobSpec(run_id="r", index=0, prompt_id="p", category="c",
                   messages=[{"role": "user", "content": "hello there"}], endpoint=ep.to_dict())


def measure(spec: JobSpec, api_key: str | None = None) -> RequestRecord:
    """Measure as a worker process does, with its HTTP client on an event loop."""
    async def one_request() -> RequestRecord:
        async with new_session(None) as session:
            return await measure_request(session, spec, api_key)

    return asyncio.run(one_request())


def app_with(handler) -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    return app


def test_mock_timing_and_tokens_are_measured(mock_server):
    with mock_server(ttft_ms=40, itl_ms=15) as url:
        record = measure(spec_for(url, max_tokens=10))
    assert record.success, record.error
    assert record.http_status == 200
    assert record.output_tokens == 10 and record.output_tokens_source == TOKENS_FROM_USAGE
    assert len(record.chunk_offsets_ms) == 10
    # Never before the server sent it; the upper bounds only catch a gross error (a loaded machine
    # may delay any read: accuracy is measured in benchmarks/ and by `tokenbench calibrate`).
    assert 40 <= record.ttft_ms == record.chunk_offsets_ms[0] < 40 + 500, (record.headers_ms, record.chunk_offsets_ms)
    assert list(record.chunk_offsets_ms) == sorted(record.chunk_offsets_ms)
    assert 40 + 9 * 15 <= record.latency_ms == record.chunk_offsets_ms[-1] < 40 + 9 * 15 + 500
    assert record.finish_reason == "length"
    assert record.input_tokens == 2
    assert record.chunk_lag_ms is None  # only a mock that stamps its send times gives the harness's lag


def test_a_stamping_mock_gives_each_chunks_receive_lag(mock_server):
    with mock_server(ttft_ms=5, itl_ms=5, stamp_send_time=True) as url:
        record = measure(spec_for(url, max_tokens=20))
    assert record.success, record.error
    assert len(record.chunk_lag_ms) == len(record.chunk_offsets_ms) == 20
    # Same host, same monotonic clock: receive minus send is positive and, on loopback, small.
    assert all(0 < lag < 50 for lag in record.chunk_lag_ms), record.chunk_lag_ms


def test_tokens_are_counted_from_chunks_when_no_usage_is_sent():
    async def handler(request):
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for word in ("a", "b", "c"):
            await response.write(f'data: {{"choices":[{{"delta":{{"content":"{word}"}}}}]}}\n\n'.encode())
        await response.write(b'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')
        return response

    with serve_app(app_with(handler)) as url:
        record = measure(spec_for(url))
    assert record.success
    assert (record.output_tokens, record.output_tokens_source) == (3, TOKENS_FROM_CHUNKS)


def test_http_error_keeps_status_and_provider_message_and_redacts_the_key():
    async def handler(request):
        auth = request.headers.get("Authorization", "")
        return web.json_response({"error": {"message": f"invalid key {auth}"}}, status=401)

    with serve_app(app_with(handler)) as url:
        record = measure(spec_for(url), api_key="sk-secret-999")
    assert not record.success
    assert (record.error_type, record.http_status) == ("http_error", 401)
    assert "invalid key" in record.error and "sk-secret-999" not in record.error


def test_stream_cut_mid_event_is_a_truncated_failure():
    async def handler(request):
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"choices":[{"delta":{"content":"a"}}]}\n\ndata: {"choi')
        return response

    with serve_app(app_with(handler)) as url:
        record = measure(spec_for(url))
    assert (record.success, record.error_type) == (False, "truncated_stream")
    assert record.output_tokens == 1  # what did arrive is still recorded


def _token_chunk(text: str) -> bytes:
    return b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"content": text}}]}) + b"\n\n"


async def _start_sse(request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    return response


def test_server_that_sends_no_headers_fails_on_the_ttft_timeout():
    async def handler(request):
        await asyncio.sleep(3)
        return web.Response(text="late")

    with serve_app(app_with(handler)) as url:
        record = measure(spec_for(url, ttft_timeout_s=0.3, idle_timeout_s=0.2))
    assert (record.success, record.error_type) == (False, "ttft_timeout")
    assert 300 <= record.elapsed_ms < 3000  # the deadline ended it, not the server's answer at 3 s


def test_keep_alives_do_not_hold_off_the_ttft_timeout():
    async def handler(request):
        response = await _start_sse(request)
        for _ in range(40):
            await response.write(b": OPENROUTER PROCESSING\n\n")
            await asyncio.sleep(0.05)
        return response

    with serve_app(app_with(handler)) as url:
        record = measure(spec_for(url, ttft_timeout_s=0.4, idle_timeout_s=5))
    assert (record.success, record.error_type) == (False, "ttft_timeout")
    assert "0.4 s" in record.error
    assert 400 <= record.elapsed_ms < 2000  # the deadline ended it, not the comments' end at 2 s


def test_stall_after_the_first_tokens_fails_on_the_idle_timeout():
    async def handler(request):
        response = await _start_sse(request)
        await response.write(_token_chunk("a") + _token_chunk("b"))
        await asyncio.sleep(3)
        return response

    with serve_app(app_with(handler)) as url:
        record = measure(spec_for(url, ttft_timeout_s=5, idle_timeout_s=0.3))
    assert (record.success, record.error_type) == (False, "idle_timeout")
    assert record.output_tokens == 2
    assert 300 <= record.elapsed_ms - record.latency_ms < 3000  # not the stall's end at 3 s


def test_a_stream_that_keeps_going_fails_on_the_total_timeout():
    async def handler(request):
        response = await _start_sse(request)
        for i in range(100):
            await response.write(_token_chunk(str(i)))
            await asyncio.sleep(0.02)
        return response

    with serve_app(app_with(handler)) as url:
        record = measure(spec_for(url, idle_timeout_s=1, total_timeout_s=0.5))
    assert (record.success, record.error_type) == (False, "total_timeout")
    assert 500 <= record.elapsed_ms < 2000  # not the stream's end at 2 s


def test_connection_dropped_mid_stream_is_connection_closed():
    async def handler(request):
        response = await _start_sse(request)
        await response.write(_token_chunk("a"))
        request.transport.abort()
        return response

    with serve_app(app_with(handler)) as url:
        record = measure(spec_for(url))
    assert (record.success, record.error_type) == (False, "connection_closed")
    assert record.output_tokens == 1


def test_nothing_listening_is_a_connect_error():
    record = measure(spec_for(f"http://127.0.0.1:{free_port()}"))
    assert (record.success, record.error_type) == (False, "connect_error")


def test_a_duplicate_push_is_stored_and_counted_once(redis_url):
    connection = redis.Redis.from_url(redis_url)
    record = RequestRecord(run_id="r", index=3, prompt_id="p", category="c", worker="w", host="h",
                           started_at=1.0, success=True, output_tokens=5)
    assert save_record(connection, record) is True
    assert save_record(connection, record) is False
    assert connection.hlen(keys.run_records("r")) == 1
    assert connection.hgetall(keys.run_progress("r")) == {b"done": b"1", b"failed": b"0", b"output_tokens": b"5"}


def test_anthropic_body_moves_system_messages_to_the_system_field():
    spec = spec_for("http://h")
    spec.messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    endpoint = Endpoint(mode="openai", base_url="http://h/v1", model="m", api="anthropic",
                        extra_body={"stream": False, "messages": [], "temperature": 0})
    body = build_request_body(spec, endpoint)
    assert body == {"model": "m", "max_tokens": 256, "system": "Be brief.", "temperature": 0,
                    "messages": [{"role": "user", "content": "Hi"}], "stream": True}


def test_retry_after_in_seconds_or_as_an_http_date():
    now = datetime(2026, 11, 27, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after("Fri, 27 Nov 2026 12:00:05 GMT", now) == 5.0
    assert parse_retry_after("Fri, 27 Nov 2026 11:00:00 GMT", now) == 0.0  # already past
    assert parse_retry_after("99999", now) == 300.0  # capped
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None


@contextmanager
def raw_http_server(reply: Callable[[socket.socket], None]) -> Iterator[str]:
    """A server on a free loopback port that reads a request and answers with ``reply(conn)`` (raw bytes,
    at its own pace); yields its base URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.recv(65536)
            try:
                reply(conn)
            except OSError:  # the client gave up: what the test is about
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        thread.join(10)


def _trickle(conn: socket.socket, data: bytes, pause_s: float, limit_s: float = 5.0) -> None:
    deadline = time.monotonic() + limit_s
    for byte in data:
        if time.monotonic() > deadline:
            return
        conn.sendall(bytes([byte]))
        time.sleep(pause_s)


def test_headers_trickled_a_byte_at_a_time_end_at_the_ttft_timeout():
    headers = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n" + b"X-Pad: " + b"a" * 200 + b"\r\n\r\n"
    with raw_http_server(lambda conn: _trickle(conn, headers, 0.02)) as url:
        record = measure(spec_for(url, ttft_timeout_s=0.4, idle_timeout_s=0.2))
    assert (record.success, record.error_type) == (False, "ttft_timeout")
    assert record.elapsed_ms < 2000  # not the seconds the trickle would take


def test_an_error_body_that_trickles_ends_at_the_ttft_timeout():
    def reply(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: 500\r\n\r\n")
        _trickle(conn, b"e" * 500, 0.02)

    with raw_http_server(reply) as url:
        record = measure(spec_for(url, ttft_timeout_s=0.4, idle_timeout_s=5))
    assert (record.success, record.error_type, record.http_status) == (False, "ttft_timeout", 500)
    assert record.elapsed_ms < 2000


def test_a_retry_after_longer_than_the_total_timeout_is_cut_to_it():
    calls = []

    async def handler(request):
        calls.append(time.monotonic())
        return web.json_response({"error": {"message": "slow down"}}, status=429,
                                 headers={"Retry-After": "99999999999"})

    with serve_app(app_with(handler)) as url:
        record = measure(spec_for(url, max_retries=1, total_timeout_s=0.5))
    assert record.error_type == "rate_limited" and len(calls) == 2
    assert record.retries[0]["retry_after_s"] == 0.5
    assert 0.45 <= calls[1] - calls[0] < 3


def test_odd_retry_after_values_are_no_wait_at_all():
    assert parse_retry_after("²") is None  # a digit to str.isdigit, not a number of seconds
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT") == 300.0
    assert parse_retry_after("-5") is None


@pytest.mark.parametrize("content_type, body", [
    ("application/json", b'{"id": "x", "choices": [{"message": {"content": "hi"}}]}'),
    ("text/html", b"<html><body>Bad gateway</body></html>"),
])
def test_a_200_that_is_not_an_event_stream_says_so(content_type, body):
    async def handler(request):
        return web.Response(body=body, content_type=content_type)

    with serve_app(app_with(handler)) as url:
        record = measure(spec_for(url))
    assert (record.success, record.error_type) == (False, "not_event_stream")
    assert content_type in record.error and body[:20].decode() in record.error


def test_a_provider_sent_as_an_object_is_read_as_its_name_and_the_report_is_made():
    from tokenbench.aggregator.report import build_report
    from tokenbench.shared.records import RunMeta

    async def handler(request):
        response = await _start_sse(request)
        chunk = {"id": 7, "model": {"weird": True}, "provider": {"name": "x"},
                 "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": "stop"}],
                 "usage": {"completion_tokens": 1, "cost": "1.5"}}
        await response.write(b"data: " + orjson.dumps(chunk) + b"\n\ndata: [DONE]\n\n")
        return response

    with serve_app(app_with(handler)) as url:
        record = measure(spec_for(url))
    assert record.success, record.error
    assert (record.provider, record.served_model, record.generation_id, record.cost) == ("x", None, "7", None)
    meta = RunMeta(run_id="r", mode="openai", model="m", base_url=url, max_tokens=8, num_prompts=1, queue="q",
                   created_at=0.0, prompt_ids=["p"], tokenbench_version="0")
    assert build_report(meta, [record])["providers"] == {"x": 1}


def test_a_response_past_max_response_bytes_fails_and_keeps_what_came(mock_server):
    with mock_server(ttft_ms=1, itl_ms=0) as url:
        record = measure(spec_for(url, max_tokens=2000, max_response_bytes=4096))
    assert (record.success, record.error_type) == (False, "response_too_large")
    assert 0 < record.output_tokens < 2000
