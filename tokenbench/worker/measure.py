"""Send one streamed chat completion and time it, chunk by chunk.

Timestamps come from ``time.perf_counter_ns`` taken right after each network read, before any
parsing; the wall-clock send time lines requests up across processes and hosts.
"""

from __future__ import annotations

import os
import socket
import time

import httpx
import orjson

from tokenbench.shared.config import Endpoint
from tokenbench.shared.records import TOKENS_FROM_CHUNKS, TOKENS_FROM_USAGE, JobSpec, RequestRecord
from tokenbench.worker.chat_stream import ChatStreamReader, StreamFailure, error_message
from tokenbench.worker.sse import SSEParser
from tokenbench.worker.watchdog import StreamWatchdog

_ERROR_BODY_LIMIT = 64 * 1024
_NS_PER_MS = 1_000_000


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def build_request_body(spec: JobSpec, endpoint: Endpoint) -> dict:
    """The chat-completions body: ``--extra-body`` may add or replace anything but the stream itself."""
    return {
        "model": endpoint.model,
        "max_tokens": spec.max_tokens or endpoint.max_tokens,
        "stream_options": {"include_usage": True},
        **endpoint.extra_body,
        "messages": spec.messages,
        "stream": True,
    }


def build_headers(endpoint: Endpoint, api_key: str | None) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        # A compressed stream would be buffered by the decoder and hide chunk timing.
        "Accept-Encoding": "identity",
        **endpoint.headers,
    }
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def redact(text: str | None, secret: str | None) -> str | None:
    if text and secret:
        return text.replace(secret, "***")
    return text


def measure_request(
    client: httpx.Client, spec: JobSpec, api_key: str | None, watchdog: StreamWatchdog
) -> RequestRecord:
    """Stream the request of ``spec`` and return its record; failures become records too."""
    endpoint = Endpoint.from_dict(spec.endpoint)
    record = RequestRecord(
        run_id=spec.run_id,
        index=spec.index,
        prompt_id=spec.prompt_id,
        category=spec.category,
        worker=worker_name(),
        host=socket.gethostname(),
        started_at=0.0,
        attempt=spec.attempt,
    )
    request = client.build_request(
        "POST",
        endpoint.chat_completions_url,
        content=orjson.dumps(build_request_body(spec, endpoint)),
        headers=build_headers(endpoint, api_key),
        # Before the response headers, httpx's per-read timer is the only one; after them the
        # watchdog enforces the TTFT, idle and total deadlines exactly.
        timeout=httpx.Timeout(
            connect=endpoint.connect_timeout_s,
            read=max(endpoint.ttft_timeout_s, endpoint.idle_timeout_s),
            write=endpoint.idle_timeout_s,
            pool=endpoint.connect_timeout_s,
        ),
    )
    reader = ChatStreamReader()
    record.started_at = time.time()
    sent_ns = time.perf_counter_ns()
    try:
        _stream(client, request, endpoint, reader, record, sent_ns, watchdog)
        record.success = True
    except StreamFailure as failure:
        record.error_type, record.error = failure.error_type, failure.message
    except httpx.HTTPError as exc:
        record.error_type, record.error = _error_type(exc, reader), f"{type(exc).__name__}: {exc}"
    record.elapsed_ms = round((time.perf_counter_ns() - sent_ns) / _NS_PER_MS, 3)
    _fill_from_stream(record, reader, sent_ns)
    record.error = redact(record.error, api_key)
    return record


def _deadline_failure(reason: str, endpoint: Endpoint) -> StreamFailure:
    limits = {
        "ttft_timeout": f"no token within {endpoint.ttft_timeout_s:g} s of sending",
        "idle_timeout": f"no data for {endpoint.idle_timeout_s:g} s after the first token",
        "total_timeout": f"stream not finished {endpoint.total_timeout_s:g} s after sending",
    }
    return StreamFailure(reason, limits[reason])


def _stream(
    client: httpx.Client,
    request: httpx.Request,
    endpoint: Endpoint,
    reader: ChatStreamReader,
    record: RequestRecord,
    sent_ns: int,
    watchdog: StreamWatchdog,
) -> None:
    total_deadline = sent_ns + int(endpoint.total_timeout_s * 1e9)
    first_token_deadline = sent_ns + int(endpoint.ttft_timeout_s * 1e9)
    response = client.send(request, stream=True)
    try:
        record.headers_ms = round((time.perf_counter_ns() - sent_ns) / _NS_PER_MS, 3)
        record.http_status = response.status_code
        if not response.is_success:
            raise StreamFailure("http_error", f"HTTP {response.status_code}: {_read_error_body(response)}")
        watchdog.start(_socket_of(response))
        watchdog.set_deadline(*_next_deadline(first_token_deadline, "ttft_timeout", total_deadline))
        parser = SSEParser()
        try:
            for data in response.iter_raw():
                received_ns = time.perf_counter_ns()
                for event in parser.feed(data, received_ns):
                    reader.on_event(event)
                if reader.token_chunk_ns:
                    deadline, reason = _next_deadline(
                        received_ns + int(endpoint.idle_timeout_s * 1e9), "idle_timeout", total_deadline
                    )
                    watchdog.set_deadline(deadline, reason)
                else:  # keep-alive comments and role chunks do not move the first-token deadline
                    deadline, reason = _next_deadline(first_token_deadline, "ttft_timeout", total_deadline)
                if received_ns > deadline:
                    raise _deadline_failure(reason, endpoint)
        except httpx.HTTPError:
            if watchdog.fired:
                raise _deadline_failure(watchdog.fired, endpoint) from None
            raise
        if parser.has_partial_event:
            raise StreamFailure("truncated_stream", "the stream ended inside an event")
        reader.check_complete()
    finally:
        watchdog.stop()
        response.close()


def _next_deadline(deadline_ns: int, reason: str, total_deadline_ns: int) -> tuple[int, str]:
    return (deadline_ns, reason) if deadline_ns < total_deadline_ns else (total_deadline_ns, "total_timeout")


def _socket_of(response: httpx.Response) -> socket.socket | None:
    stream = response.extensions.get("network_stream")
    return stream.get_extra_info("socket") if stream is not None else None


def _read_error_body(response: httpx.Response) -> str:
    body = b""
    for data in response.iter_raw():
        body += data
        if len(body) >= _ERROR_BODY_LIMIT:
            break
    try:
        return error_message(orjson.loads(body))
    except orjson.JSONDecodeError:
        return body[:500].decode("utf-8", errors="replace") or response.reason_phrase


def _fill_from_stream(record: RequestRecord, reader: ChatStreamReader, sent_ns: int) -> None:
    offsets = [round((t - sent_ns) / _NS_PER_MS, 3) for t in reader.token_chunk_ns]
    record.chunk_offsets_ms = offsets
    if offsets:
        record.ttft_ms = offsets[0]
        record.latency_ms = offsets[-1]
    if reader.completion_tokens is not None:
        record.output_tokens, record.output_tokens_source = reader.completion_tokens, TOKENS_FROM_USAGE
    else:
        record.output_tokens, record.output_tokens_source = len(offsets), TOKENS_FROM_CHUNKS
    record.input_tokens = reader.prompt_tokens
    record.finish_reason = reader.finish_reason
    record.served_model = reader.model


# Most specific first: the first class that matches names the failure. A read timeout is the
# backstop for a server that sends no response headers (see measure_request).
_ERROR_TYPES: tuple[tuple[type[httpx.HTTPError], str], ...] = (
    (httpx.ConnectTimeout, "connect_timeout"),
    (httpx.TimeoutException, "timeout"),
    (httpx.ConnectError, "connect_error"),
    (httpx.RemoteProtocolError, "connection_closed"),
    (httpx.ReadError, "connection_closed"),
    (httpx.HTTPError, "transport_error"),
)


def _error_type(exc: httpx.HTTPError, reader: ChatStreamReader) -> str:
    if isinstance(exc, httpx.ReadTimeout):
        return "idle_timeout" if reader.token_chunk_ns else "ttft_timeout"
    return next(name for cls, name in _ERROR_TYPES if isinstance(exc, cls))
