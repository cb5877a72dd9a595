"""The mock server: ``/v1/chat/completions`` (streaming and not) and ``/v1/models`` on aiohttp.

It answers after ``ttft_ms`` with the first token and then sends a token every ``itl_ms``, in the
shape ``StreamShape`` describes (see shapes.py), with the faults of ``tokenbench.mock.FAULTS`` at a
given rate. Each send is scheduled against an absolute deadline measured from the moment the
request arrived, so a late wake-up never delays the events after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tokenbench.mock.metrics import MockMetrics
from tokenbench.mock.prefix_cache import PrefixCache
from tokenbench.mock.replay import TimedReads
from tokenbench.mock.shapes import (
    Completion,
    StreamShape,
    anthropic_error,
    frame,
    midstream_error,
    plan_anthropic_stream,
    plan_completion_stream,
    plan_responses_stream,
    plan_stream,
    token_text,
)
from tokenbench.shared.calibration import SEND_STAMP_FIELD
from tokenbench.shared.lifetime import die_with_parent

DEFAULT_TTFT_MS = 50.0
DEFAULT_ITL_MS = 10.0
DEFAULT_OUTPUT_TOKENS = 128  # when neither --output-tokens nor the request's max_tokens says
MOCK_MODEL = "mock-model"
_STAMP = SEND_STAMP_FIELD.encode()
_SPLIT_PAUSE_S = 0.001  # between the pieces of a split event, so that they arrive as separate reads


@dataclass(frozen=True)
class MockSettings:
    ttft_ms: float = DEFAULT_TTFT_MS
    itl_ms: float = DEFAULT_ITL_MS
    output_tokens: int | None = None  # None: the request's max_tokens
    model: str = MOCK_MODEL
    replay: TimedReads | None = None  # answer every streamed request with this recording instead
    fault: str | None = None  # one of tokenbench.mock.FAULTS, or several joined by commas (taken in turn)
    fault_rate: float = 1.0  # share of streamed requests that get the fault, spread evenly
    fault_after: int = 1  # tokens sent before the fault
    retry_after_s: int = 1  # the Retry-After of a rate_limit fault
    shape: StreamShape = field(default_factory=StreamShape)
    stamp_send_time: bool = False  # put each chunk's write time in it (shared/calibration.py)
    prefix_cache: bool = False  # simulate a prefix cache: a seen prefix shortens TTFT, usage reports it


def is_faulty(request_number: int, rate: float) -> bool:
    """Whether the n-th request (from 0) gets the fault: exactly ``rate`` of every run of requests."""
    return math.floor((request_number + 1) * rate) > math.floor(request_number * rate)


def output_length(settings: MockSettings, body: dict[str, Any]) -> int:
    if settings.output_tokens is not None:
        return settings.output_tokens
    requested = requested_tokens(body)
    return requested if isinstance(requested, int) and requested > 0 else DEFAULT_OUTPUT_TOKENS


def requested_tokens(body: dict[str, Any]) -> object:
    """The request's output limit, whichever field its API names it by."""
    return body.get("max_tokens") or body.get("max_completion_tokens") or body.get("max_output_tokens")


def prompt_words(body: dict[str, Any]) -> list[str]:
    """The mock's stand-in for a prompt's tokens: the whitespace-separated words of every message."""
    text = body.get("prompt") if isinstance(body.get("prompt"), str) else body.get("input")
    words: list[str] = text.split() if isinstance(text, str) else []
    messages = body.get("input") if isinstance(body.get("input"), list) else body.get("messages")
    for message in messages or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            words += content.split()
    return words


def completion_body(answer: Completion) -> dict[str, Any]:
    """The non-streamed response."""
    return {
        "id": answer.completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answer.model,
        "choices": [{"index": 0, "message": {"role": "assistant",
                                             "content": "".join(token_text(i) for i in range(answer.n_tokens))},
                     "finish_reason": answer.finish_reason}],
        "usage": {"prompt_tokens": answer.n_prompt, "completion_tokens": answer.n_tokens,
                  "total_tokens": answer.n_prompt + answer.n_tokens},
    }


async def _sleep_until(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    delay = deadline - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)


def _error(status: int, message: str, error_type: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": error_type}}, status=status, headers=headers)


class MockServer:
    def __init__(self, settings: MockSettings, serves_metrics: bool = True) -> None:
        self.settings = settings
        # One of several processes on a port counts only the requests it served, and a replay counts
        # none (it sends recorded bytes): their /metrics would pass a share of the run, or nothing,
        # off as the whole. Without one a scraper turns itself off.
        self._serves_metrics = serves_metrics and settings.replay is None
        self._streams_started = 0
        self._faults = tuple(settings.fault.split(",")) if settings.fault else ()
        self._faults_injected = 0
        self.metrics = MockMetrics(settings.model)
        self._prefix_cache = PrefixCache() if settings.prefix_cache else None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/responses", self.responses)
        app.router.add_get("/v1/models", self.models)
        if self._serves_metrics:
            app.router.add_get("/metrics", self.prometheus_metrics)
        return app

    async def prometheus_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.text(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": self.settings.model, "object": "model", "owned_by": "tokenbench"}]}
        )

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._answer_request(request, plan_stream)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        """The text-completions API (streamed only): a ``prompt`` instead of messages."""
        return await self._answer_request(request, plan_completion_stream)

    async def responses(self, request: web.Request) -> web.StreamResponse:
        """OpenAI's Responses API (streamed only): ``input`` is a text or a list of messages."""
        return await self._answer_request(request, plan_responses_stream)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        """The Anthropic Messages API (streamed only)."""
        return await self._answer_request(request, plan_anthropic_stream)

    async def _answer_request(self, request: web.Request, plan: Callable) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "request body is not JSON", "invalid_request_error")
        if plan is plan_completion_stream:
            if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
                return _error(400, "'prompt' must be a string", "invalid_request_error")
        elif plan is plan_responses_stream:
            if not isinstance(body, dict) or not isinstance(body.get("input"), (str, list)):
                return _error(400, "'input' must be a string or a list", "invalid_request_error")
        elif not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "'messages' must be a list", "invalid_request_error")
        answer = self._answer(body)
        if not body.get("stream"):
            if plan is not plan_stream:
                return _error(400, f"the mock's {request.path} answers streamed requests only", "invalid_request_error")
            await _sleep_until(loop, arrived + answer.ttft_s + answer.itl_s * max(answer.n_tokens - 1, 0))
            return web.json_response(completion_body(answer))

        fault = None
        if self._faults and is_faulty(self._streams_started, self.settings.fault_rate):
            fault = self._faults[self._faults_injected % len(self._faults)]  # a mix: each fault in turn
            self._faults_injected += 1
        self._streams_started += 1
        if fault == "hang":
            await asyncio.sleep(3600)  # ends when the client goes away and aiohttp cancels us
        if fault == "http_error":
            return _error(500, "mock: injected server error", "server_error")
        if fault == "rate_limit":
            return _error(429, "mock: rate limit exceeded", "rate_limit_exceeded",
                          headers={"Retry-After": str(self.settings.retry_after_s)})
        if fault == "overloaded":
            return _error(503, "mock: overloaded", "overloaded",
                          headers={"Retry-After": str(self.settings.retry_after_s)})
        response = await self._start_stream(request)
        self.metrics.running.inc()
        try:
            if self.settings.replay is not None:
                await self._replay(response, arrived)
            else:
                events = plan(self.settings.shape, answer)
                error_event = (anthropic_error() if plan is plan_anthropic_stream
                               else midstream_error(self.settings.shape.error_style))
                token_sends = await self._stream(request, response, events, arrived, fault, error_event)
                if token_sends is not None:
                    self.metrics.finished(arrived, token_sends, answer.n_prompt, answer.finish_reason, loop.time())
        except ConnectionResetError:  # the client went away (a timeout, a killed worker): nothing to do
            pass
        finally:
            self.metrics.running.dec()
        return response

    def _answer(self, body: dict[str, Any]) -> Completion:
        n_tokens = output_length(self.settings, body)
        stream_options = body.get("stream_options") or {}
        words = prompt_words(body)
        ttft_s, n_cached = self.settings.ttft_ms / 1000, None
        if self._prefix_cache is not None:
            # A cached prefix is not computed again: TTFT shrinks with the share of the prompt left.
            n_cached = self._prefix_cache.hit_and_store(words)
            ttft_s *= max(len(words) - n_cached, 1) / max(len(words), 1)
            self.metrics.prefix_cache(len(words), n_cached)
            # The answer's blocks are cached too, as vLLM's are: a conversation's next turn, which
            # sends this prompt and answer back as its history, finds both.
            self._prefix_cache.hit_and_store(words + [token_text(i).strip() for i in range(n_tokens)])
        return Completion(
            completion_id=f"chatcmpl-mock-{uuid.uuid4().hex[:12]}",
            model=body.get("model") or self.settings.model,
            n_tokens=n_tokens,
            n_prompt=len(words),
            n_cached=n_cached,
            finish_reason="length" if requested_tokens(body) == n_tokens else "stop",
            ttft_s=ttft_s,
            itl_s=self.settings.itl_ms / 1000,
            include_usage=bool(stream_options.get("include_usage")),
        )

    async def _replay(self, response: web.StreamResponse, arrived: float) -> None:
        loop = asyncio.get_running_loop()
        for ms, data in self.settings.replay or ():
            await _sleep_until(loop, arrived + ms / 1000)
            await response.write(data)
        await response.write_eof()

    async def _stream(self, request: web.Request, response: web.StreamResponse, events: list, arrived: float,
                      fault: str | None, error_event: bytes) -> list[tuple[float, int]] | None:
        """Send the planned events at their times; (send time, tokens) of each token chunk, or None
        for a stream a fault cut short."""
        loop = asyncio.get_running_loop()
        token_sends: list[tuple[float, int]] = []
        pending_tokens = 0
        shape = self.settings.shape
        split = shape.sse_number("split")
        batch = shape.sse_number("batch") or 1
        pending = b""
        for number, event in enumerate(events):
            if fault is not None and event.tokens and event.tokens_before >= self.settings.fault_after:
                if fault == "stall":
                    await asyncio.sleep(3600)
                elif fault == "drop":
                    if request.transport is not None:  # None: the client is gone already
                        request.transport.abort()
                    return None
                elif fault == "garbage":
                    await response.write(b"data: {this is not json\n\n")
                elif fault == "error":  # the API's mid-stream error event, then the connection closes
                    await response.write(error_event)
                    return None
                fault = None
            pending += frame(event.data, shape.sse, number)
            pending_tokens += event.tokens
            if (number + 1) % batch and number + 1 < len(events):
                continue  # batch=N: N events in one write
            await _sleep_until(loop, arrived + event.at_s)
            if self.settings.stamp_send_time:
                pending = pending.replace(b"data: {", b'data: {"%s":%d,' % (_STAMP, time.perf_counter_ns()))
            for start in range(0, len(pending), split or len(pending)):
                if split and start:
                    await asyncio.sleep(_SPLIT_PAUSE_S)
                await response.write(pending[start:start + split] if split else pending)
            if pending_tokens:
                token_sends.append((loop.time(), pending_tokens))
            pending, pending_tokens = b"", 0
        await response.write_eof()
        return token_sends

    @staticmethod
    async def _start_stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return response


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 picks a free one (read it back with getsockname). Other processes
    may listen on the same port (SO_REUSEPORT): the kernel spreads the connections over them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except (TypeError, UnicodeError) as exc:  # a host name that cannot even be encoded (IDNA)
            raise OSError(f"not a host name ({exc})") from None
        sock.listen(4096)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def serve(settings: MockSettings, sock: socket.socket, processes: int = 1) -> None:
    """Serve on ``sock`` until interrupted (SIGINT/SIGTERM), in ``processes`` processes that share its
    port: one process's event loop streams ~6,000 chunks/s on one core of the development machine
    before its timing slips (benchmarks/mock_capacity.py). Each process counts its own requests for
    ``fault_rate``."""
    host, port = sock.getsockname()[:2]
    children = []
    for _ in range(processes - 1):
        pid = os.fork()
        if pid == 0:  # a child: its own socket on the same port, its own event loop
            die_with_parent()
            _run(settings, bind_socket(host, port), serves_metrics=False)
            os._exit(0)
        children.append(pid)
    try:
        _run(settings, sock, serves_metrics=processes == 1)
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _run(settings: MockSettings, sock: socket.socket, serves_metrics: bool) -> None:
    web.run_app(MockServer(settings, serves_metrics).app(), sock=sock, print=None, access_log=None,
                handle_signals=True)
