"""Send one streamed chat completion and time it, chunk by chunk, on the worker's event loop.

Timestamps come from ``time.perf_counter_ns`` taken as soon as each network read returns, before
any parsing; the wall-clock send time lines requests up across processes and hosts. The client is
aiohttp: at 512 streams in one process httpx.AsyncClient took 14x its CPU (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson

from tokenbench.shared.endpoint import Endpoint
from tokenbench.shared.records import (
    NO_CONTEXT,
    TOKENS_FROM_CHUNKS,
    TOKENS_FROM_USAGE,
    ErrorType,
    JobSpec,
    RecordContext,
    RequestRecord,
)
from tokenbench.worker import clock
from tokenbench.worker.dialects import DIALECTS
from tokenbench.worker.send_turns import SendTurns
from tokenbench.worker.sse import SSEParser
from tokenbench.worker.stream_failure import StreamFailure
from tokenbench.worker.stream_reader import StreamReader, TokenChunk, error_message

_ERROR_BODY_LIMIT = 64 * 1024
_OPENING_BYTES = 200
DEFAULT_RETRY_AFTER_S = 1.0  # a 429 that does not say how long to wait
MAX_RETRY_AFTER_S = 300.0  # a longer wait is cut to this
_NS_PER_MS = 1_000_000


class HeaderWaits:
    """How many requests of each run wait for their response's headers right now: what a progress
    display shows while a server queues requests or a stream never answers."""

    def __init__(self) -> None:
        self.by_run: Counter[str] = Counter()


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def build_request_body(spec: JobSpec, endpoint: Endpoint) -> dict:
    """The request body in the endpoint's API: ``--extra-body`` may add or replace anything but the
    prompt and the stream itself, and leaves out a field it sets to null."""
    body = DIALECTS[endpoint.api].body(spec, endpoint, spec.max_tokens or endpoint.max_tokens)
    body["stream"] = True
    return {name: value for name, value in body.items() if value is not None}


def build_headers(endpoint: Endpoint, api_key: str | None) -> dict[str, str]:
    dialect = DIALECTS[endpoint.api]
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        # A compressed stream would be buffered by the decoder and hide chunk timing.
        "Accept-Encoding": "identity",
        **dialect.headers,
    }
    if api_key:
        headers |= {endpoint.api_key_header: api_key} if endpoint.api_key_header else dialect.key_header(api_key)
    return {**headers, **endpoint.headers}


def new_reader(endpoint: Endpoint) -> StreamReader:
    return DIALECTS[endpoint.api].reader()


def redact(text: str | None, secret: str | None) -> str | None:
    if text and secret:
        return text.replace(secret, "***")
    return text


@dataclass
class Answer:
    """The answer's text (reasoning left out), for a conversation's next turn to send back."""

    text: str = ""


async def measure_request(session: aiohttp.ClientSession, spec: JobSpec, api_key: str | None,
                          header_waits: HeaderWaits | None = None, answer: Answer | None = None,
                          context: RecordContext = NO_CONTEXT, turns: SendTurns | None = None) -> RequestRecord:
    """Stream the request of ``spec`` and return its record; failures become records too. With an
    ``answer``, the answer's text is put there; ``context`` is what the record carries from outside
    the request (its stream, when it was due, ...); each send waits for its turn among ``turns``.

    A 429, or a 503 with Retry-After, is retried up to ``max_retries`` times after the wait the
    server asks for (never longer than the total timeout); the record times the last attempt and
    lists the earlier ones in ``retries``.
    """
    endpoint = Endpoint.from_dict(spec.endpoint)
    retries: list[dict[str, Any]] = []
    first_sent_ns: int | None = None
    while True:
        if turns is not None:
            await turns.take()
        attempt = await _attempt(session, spec, endpoint, api_key, header_waits)
        if first_sent_ns is None:
            first_sent_ns = attempt.sent_ns
        if attempt.retry_after_s is None or len(retries) >= endpoint.max_retries:
            break
        retry_after_s = min(attempt.retry_after_s, endpoint.total_timeout_s)
        retries.append({"http_status": attempt.http_status, "error_type": attempt.error_type,
                        "error": redact(attempt.error, api_key), "retry_after_s": retry_after_s})
        await asyncio.sleep(retry_after_s)
    if answer is not None:
        answer.text = "".join(attempt.reader.answer_parts)
    return _record(spec, attempt, retries, (attempt.sent_ns - first_sent_ns) / _NS_PER_MS, context,
                   endpoint.keep_text_without_usage, api_key)


@dataclass
class _Attempt:
    """What one send of a request saw, as it goes: the record is made from the last one."""

    started_at: float  # epoch seconds on the Redis clock
    sent_ns: int  # perf_counter_ns
    reader: StreamReader
    headers_ms: float | None = None
    http_status: int | None = None
    success: bool = False
    error_type: str | None = None
    error: str | None = None
    retry_after_s: float | None = None  # the wait the server asked for before a retry
    elapsed_ms: float | None = None


async def _attempt(session: aiohttp.ClientSession, spec: JobSpec, endpoint: Endpoint, api_key: str | None,
                   header_waits: HeaderWaits | None) -> _Attempt:
    """One send."""
    body = orjson.dumps(build_request_body(spec, endpoint))
    headers = build_headers(endpoint, api_key)
    reader = new_reader(endpoint)  # before the clocks are read: the send is the next thing that happens
    attempt = _Attempt(clock.now(), time.perf_counter_ns(), reader)
    deadline = StreamDeadline(endpoint, attempt.sent_ns)
    waiting = header_waits.by_run if header_waits is not None else None
    if waiting is not None:
        waiting[spec.run_id] += 1
    try:
        with deadline:
            async with asyncio.timeout(None) as timer:
                deadline.start(timer)
                await _stream(session, endpoint, body, headers, deadline, attempt, spec.run_id, waiting)
        attempt.success = True
    except StreamFailure as failure:
        attempt.error_type, attempt.error = failure.error_type, failure.message
        attempt.retry_after_s = failure.retry_after_s
    except TimeoutError:
        cut = deadline.failure()
        attempt.error_type, attempt.error = cut.error_type, cut.message
    except aiohttp.ClientError as exc:
        attempt.error_type, attempt.error = _error_type(exc), f"{type(exc).__name__}: {exc}"
    finally:
        if waiting is not None and attempt.headers_ms is None:  # it ended before the headers came
            waiting[spec.run_id] -= 1
    attempt.elapsed_ms = round((time.perf_counter_ns() - attempt.sent_ns) / _NS_PER_MS, 3)
    return attempt


def _record(spec: JobSpec, attempt: _Attempt, retries: list[dict[str, Any]], retry_wait_ms: float,
            context: RecordContext, keep_text: bool, api_key: str | None) -> RequestRecord:
    """The request's record, made once: from the spec, its last send, what the stream carried, and
    the context."""
    reader = attempt.reader
    chunks = reader.token_chunks
    offsets = [round((c.received_ns - attempt.sent_ns) / _NS_PER_MS, 3) for c in chunks]
    if reader.completion_tokens is not None:
        output_tokens, output_tokens_source = reader.completion_tokens, TOKENS_FROM_USAGE
    else:
        output_tokens, output_tokens_source = len(offsets), TOKENS_FROM_CHUNKS
    chunk_tokens, chunk_tokens_source = tokens_per_chunk(chunks, reader.tokens_before_first_chunk)
    reasoning_tokens, reasoning_tokens_source = count_reasoning_tokens(chunks, chunk_tokens, output_tokens,
                                                                       reader.reasoning_tokens)
    stamps = [c.server_sent_ns for c in chunks]
    chunk_lag_ms = [round((c.received_ns - stamp) / _NS_PER_MS, 3) for c, stamp in zip(chunks, stamps)
                    if stamp is not None] if chunks and all(stamp is not None for stamp in stamps) else None
    offset = clock.current_offset()
    first_sent_at = attempt.started_at - retry_wait_ms / 1000
    return RequestRecord(
        run_id=spec.run_id,
        index=spec.index,
        prompt_id=spec.prompt_id,
        category=spec.category,
        worker=worker_name(),
        host=socket.gethostname(),
        started_at=attempt.started_at,
        success=attempt.success,
        error_type=attempt.error_type,
        error=redact(attempt.error, api_key),
        http_status=attempt.http_status,
        headers_ms=attempt.headers_ms,
        ttft_ms=offsets[0] if offsets else None,
        latency_ms=offsets[-1] if offsets else None,
        elapsed_ms=attempt.elapsed_ms,
        chunk_offsets_ms=offsets,
        output_tokens=output_tokens,
        output_tokens_source=output_tokens_source,
        input_tokens=reader.prompt_tokens,
        cached_tokens=reader.cached_tokens,
        finish_reason=reader.finish_reason,
        served_model=reader.model,
        attempt=spec.attempt,
        ttfat_ms=next((offset for offset, c in zip(offsets, chunks) if c.answer_chars), None),
        chunk_tokens=chunk_tokens,
        chunk_tokens_source=chunk_tokens_source,
        reasoning_tokens=reasoning_tokens,
        answer_tokens=max(output_tokens - reasoning_tokens, 0),
        reasoning_tokens_source=reasoning_tokens_source,
        provider=reader.provider,
        generation_id=reader.generation_id,
        cost=reader.cost,
        retries=retries,
        retry_wait_ms=round(retry_wait_ms, 3),
        warmup=context.warmup,
        clock_offset_ms=round(offset.offset_s * 1000, 3) if offset is not None else None,
        clock_rtt_ms=round(offset.rtt_s * 1000, 3) if offset is not None else None,
        scheduled_at=context.scheduled_at,
        dispatch_lag_ms=round((first_sent_at - context.scheduled_at) * 1000, 3)
        if context.scheduled_at is not None else None,
        chunk_lag_ms=chunk_lag_ms,
        stream=context.stream,
        output_text="".join(reader.text_parts) if keep_text and reader.completion_tokens is None else None,
        session_id=spec.session_id if context.turn is not None else None,
        turn=context.turn,
    )


class StreamDeadline:
    """The one deadline a stream is held to at any moment: no first token within the TTFT timeout
    of sending, no data for the idle timeout after the first token, and the total timeout.

    A stream that reaches it is ended through an ``asyncio.timeout``, so it fires however the server
    behaves: silent, trickling headers, an error body that never ends. Reads after the first token
    only note their time; a timer looks at it when the deadline it last computed comes, and sets
    the next one, so that a chunk costs an assignment, not a new timer."""

    def __init__(self, endpoint: Endpoint, sent_ns: int) -> None:
        self._endpoint = endpoint
        self._sent_ns = sent_ns
        self._total_ns = sent_ns + int(endpoint.total_timeout_s * 1e9)
        self._last_data_ns: int | None = None  # the last read since the first token
        self.reason = ErrorType.TTFT_TIMEOUT
        self._timer: asyncio.Timeout | None = None
        self._handle: asyncio.TimerHandle | None = None

    def __enter__(self) -> StreamDeadline:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._handle is not None:
            self._handle.cancel()

    def start(self, timer: asyncio.Timeout) -> None:
        self._timer = timer
        self._check()

    def data_received(self, received_ns: int) -> None:
        """A read at or after the first token. The first one moves the deadline sooner (the idle
        timeout is usually shorter than the TTFT one), so it sets the timer again."""
        first = self._last_data_ns is None
        self._last_data_ns = received_ns
        if first:
            if self._handle is not None:
                self._handle.cancel()
            self._check()

    def _due(self) -> tuple[int, ErrorType]:
        if self._last_data_ns is None:
            due, reason = self._sent_ns + int(self._endpoint.ttft_timeout_s * 1e9), ErrorType.TTFT_TIMEOUT
        else:
            due, reason = self._last_data_ns + int(self._endpoint.idle_timeout_s * 1e9), ErrorType.IDLE_TIMEOUT
        return (due, reason) if due < self._total_ns else (self._total_ns, ErrorType.TOTAL_TIMEOUT)

    def _check(self) -> None:
        due_ns, self.reason = self._due()
        remaining_ns = due_ns - time.perf_counter_ns()
        loop = asyncio.get_running_loop()
        if remaining_ns > 0:
            self._handle = loop.call_later(remaining_ns / 1e9, self._check)
        else:
            assert self._timer is not None
            self._timer.reschedule(loop.time())  # ends the stream now, as a TimeoutError

    def failure(self) -> StreamFailure:
        limits = {
            ErrorType.TTFT_TIMEOUT: f"no token within {self._endpoint.ttft_timeout_s:g} s of sending",
            ErrorType.IDLE_TIMEOUT: f"no data for {self._endpoint.idle_timeout_s:g} s after the first token",
            ErrorType.TOTAL_TIMEOUT: f"stream not finished {self._endpoint.total_timeout_s:g} s after sending",
        }
        return StreamFailure(self.reason, limits[self.reason])


async def _stream(
    session: aiohttp.ClientSession,
    endpoint: Endpoint,
    body: bytes,
    headers: dict[str, str],
    deadline: StreamDeadline,
    attempt: _Attempt,
    run_id: str,
    waiting: Counter[str] | None,
) -> None:
    connect = aiohttp.ClientTimeout(total=None, connect=endpoint.connect_timeout_s,
                                    sock_connect=endpoint.connect_timeout_s, sock_read=None)
    reader = attempt.reader
    async with session.post(endpoint.request_url, data=body, headers=headers, timeout=connect) as response:
        attempt.headers_ms = round((time.perf_counter_ns() - attempt.sent_ns) / _NS_PER_MS, 3)
        if waiting is not None:
            waiting[run_id] -= 1
        attempt.http_status = response.status
        if response.status >= 300:
            raise await _http_failure(response)
        parser = SSEParser()
        content = response.content
        opening = b""  # the body's first bytes, to say what it was if it is no event stream
        size = 0
        while data := await content.readany():
            received_ns = time.perf_counter_ns()
            for event in parser.feed(data, received_ns):
                reader.on_event(event)
            size += len(data)  # checked after the read is parsed (a read is at most 64 KiB): its tokens count
            if size > endpoint.max_response_bytes:
                raise StreamFailure(ErrorType.RESPONSE_TOO_LARGE, f"the response passed --max-response-bytes "
                                                          f"({endpoint.max_response_bytes:,} bytes)")
            if reader.token_chunks:  # keep-alive comments and role chunks do not move the first-token deadline
                deadline.data_received(received_ns)
            if len(opening) < _OPENING_BYTES:
                opening += data[:_OPENING_BYTES]
        if not parser.events_seen and not _is_event_stream(response):
            raise _not_event_stream(response, opening)
        if parser.has_partial_event:
            raise StreamFailure(ErrorType.TRUNCATED_STREAM, "the stream ended inside an event")
        reader.check_complete()


def _not_event_stream(response: aiohttp.ClientResponse, opening: bytes) -> StreamFailure:
    kind = response.headers.get("Content-Type") or "no Content-Type"
    if "Content-Encoding" in response.headers:
        kind += f", Content-Encoding {response.headers['Content-Encoding']}"
    return StreamFailure(ErrorType.NOT_EVENT_STREAM, f"HTTP {response.status} ({kind}) is not an event stream: "
                                             f"{opening[:100]!r}")


def _is_event_stream(response: aiohttp.ClientResponse) -> bool:
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    return content_type == "text/event-stream" and "Content-Encoding" not in response.headers


async def _http_failure(response: aiohttp.ClientResponse) -> StreamFailure:
    """429 is ``rate_limited`` and retryable (after Retry-After, else 1 s); a 503 is retryable when it
    says when to come back. Other statuses are ``http_error``."""
    message = f"HTTP {response.status}: {await _read_error_body(response)}"
    retry_after_s = parse_retry_after(response.headers.get("Retry-After"))
    if response.status == 429:
        wait_s = DEFAULT_RETRY_AFTER_S if retry_after_s is None else retry_after_s
        return StreamFailure(ErrorType.RATE_LIMITED, message, retry_after_s=wait_s)
    if response.status == 503:
        return StreamFailure(ErrorType.HTTP_ERROR, message, retry_after_s=retry_after_s)
    return StreamFailure(ErrorType.HTTP_ERROR, message)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP date; None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    delay = (when - (now or datetime.now(timezone.utc))).total_seconds()
    return min(max(delay, 0.0), MAX_RETRY_AFTER_S)


async def _read_error_body(response: aiohttp.ClientResponse) -> str:
    body = b""
    while len(body) < _ERROR_BODY_LIMIT and (data := await response.content.readany()):
        body += data
    try:
        return error_message(orjson.loads(body))
    except orjson.JSONDecodeError:
        return body[:500].decode("utf-8", errors="replace") or (response.reason or "")


def tokens_per_chunk(chunks: list[TokenChunk], tokens_before: int) -> tuple[list[int] | None, str | None]:
    """Tokens in each chunk, from a running usage count on every chunk or from logprobs; else unknown."""
    running = [c.running_tokens for c in chunks]
    if chunks and all(tokens is not None for tokens in running):
        totals = [tokens_before, *(t for t in running if t is not None)]
        counts = [later - earlier for earlier, later in zip(totals, totals[1:])]
        if all(k >= 1 for k in counts):
            return counts, "usage"
    logprobs = [c.logprob_tokens for c in chunks]
    if chunks and all(logprobs):
        return [k for k in logprobs if k], "logprobs"
    return None, None


def count_reasoning_tokens(
    chunks: list[TokenChunk], chunk_tokens: list[int] | None, output_tokens: int, reported: int | None
) -> tuple[int, str | None]:
    """Reasoning tokens: the server's count, else the tokens of reasoning chunks, else an estimate
    from the share of reasoning characters. A chunk carrying both is split by its characters.

    The stream wins where the server's count contradicts it: vLLM's ``minimax_m2_append_think``
    parser streams the whole answer inside an unclosed ``<think>`` and reports 0 reasoning tokens.
    (A count above 0 with no reasoning streamed is believed: some APIs keep their reasoning hidden.)"""
    if reported is not None and not _contradicts(reported, chunks, output_tokens):
        return reported, "usage"
    if not any(c.reasoning for c in chunks):
        return 0, None
    if chunk_tokens is not None:
        share = sum(k * _reasoning_share(c) for k, c in zip(chunk_tokens, chunks))
        return round(share), "chunk_usage"
    reasoning_chars = sum(c.reasoning_chars for c in chunks)
    total_chars = reasoning_chars + sum(c.answer_chars for c in chunks)
    return (round(output_tokens * reasoning_chars / total_chars) if total_chars else 0), "estimate"


def _contradicts(reported: int, chunks: list[TokenChunk], output_tokens: int) -> bool:
    """Whether a server's reasoning count is impossible given what it streamed: none, though text
    came as reasoning; or all of the output, though answer text came."""
    if reported == 0:
        return any(c.reasoning_chars for c in chunks)
    return reported >= output_tokens > 0 and any(c.answer_chars for c in chunks)


def _reasoning_share(chunk: TokenChunk) -> float:
    if not chunk.reasoning:
        return 0.0
    total = chunk.reasoning_chars + chunk.answer_chars
    return chunk.reasoning_chars / total if total and chunk.answer_chars else 1.0


# Most specific first: the first class that matches names the failure.
_ERROR_TYPES: tuple[tuple[type[aiohttp.ClientError], str], ...] = (
    (aiohttp.ConnectionTimeoutError, ErrorType.CONNECT_TIMEOUT),
    (aiohttp.ClientConnectorError, ErrorType.CONNECT_ERROR),
    (aiohttp.ServerDisconnectedError, ErrorType.CONNECTION_CLOSED),
    (aiohttp.ClientPayloadError, ErrorType.CONNECTION_CLOSED),
    (aiohttp.ClientOSError, ErrorType.CONNECTION_CLOSED),
    (aiohttp.ClientError, ErrorType.TRANSPORT_ERROR),
)


def _error_type(exc: aiohttp.ClientError) -> str:
    return str(next(name for cls, name in _ERROR_TYPES if isinstance(exc, cls)))
