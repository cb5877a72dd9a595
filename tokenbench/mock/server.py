"""The mock server: ``/v1/chat/completions`` (streaming and not) and ``/v1/models`` on aiohttp.

It answers after ``ttft_ms`` with the first token and then sends one token per chunk every
``itl_ms``. Each send is scheduled against an absolute deadline measured from the moment the
request arrived, so a late wake-up never delays the tokens after it.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from tokenbench.mock.replay import TimedReads

DEFAULT_TTFT_MS = 50.0
DEFAULT_ITL_MS = 10.0
DEFAULT_OUTPUT_TOKENS = 128  # when neither --output-tokens nor the request's max_tokens says
MOCK_MODEL = "mock-model"
_WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "tempor", "magna", "aliqua", "veniam", "nostrud")


@dataclass(frozen=True)
class MockSettings:
    ttft_ms: float = DEFAULT_TTFT_MS
    itl_ms: float = DEFAULT_ITL_MS
    output_tokens: int | None = None  # None: the request's max_tokens
    model: str = MOCK_MODEL
    replay: TimedReads | None = None  # answer every streamed request with this recording instead
    fault: str | None = None  # one of tokenbench.mock.FAULTS
    fault_rate: float = 1.0  # share of streamed requests that get the fault, spread evenly
    fault_after: int = 1  # tokens sent before the fault


def is_faulty(request_number: int, rate: float) -> bool:
    """Whether the n-th request (from 0) gets the fault: exactly ``rate`` of every run of requests."""
    return math.floor((request_number + 1) * rate) > math.floor(request_number * rate)


def token_text(i: int) -> str:
    return " " + _WORDS[i % len(_WORDS)]


def output_length(settings: MockSettings, body: dict[str, Any]) -> int:
    if settings.output_tokens is not None:
        return settings.output_tokens
    requested = body.get("max_tokens") or body.get("max_completion_tokens")
    return requested if isinstance(requested, int) and requested > 0 else DEFAULT_OUTPUT_TOKENS


def prompt_tokens(body: dict[str, Any]) -> int:
    """A stand-in count: whitespace-separated words of every message."""
    words = 0
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            words += len(content.split())
    return words


@dataclass(frozen=True)
class _Answer:
    """What the mock will answer to one request, and when."""

    completion_id: str
    model: str
    n_tokens: int
    usage: dict[str, int]
    finish_reason: str
    first_at: float  # event-loop time of the first token
    itl_s: float
    include_usage: bool

    def chunk(self, delta: dict, finish_reason: str | None = None) -> bytes:
        payload = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    def completion(self) -> dict[str, Any]:
        """The non-streamed response."""
        text = "".join(token_text(i) for i in range(self.n_tokens))
        return {
            "id": self.completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": self.finish_reason}],
            "usage": self.usage,
        }


async def _sleep_until(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    delay = deadline - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error"}}, status=400)


class MockServer:
    def __init__(self, settings: MockSettings) -> None:
        self.settings = settings
        self._streams_started = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/v1/models", self.models)
        return app

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": self.settings.model, "object": "model", "owned_by": "tokenbench"}]}
        )

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _bad_request("request body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _bad_request("'messages' must be a list")
        answer = self._plan(body, arrived)
        if not body.get("stream"):
            await _sleep_until(loop, answer.first_at + answer.itl_s * max(answer.n_tokens - 1, 0))
            return web.json_response(answer.completion())

        fault = None
        if self.settings.fault is not None and is_faulty(self._streams_started, self.settings.fault_rate):
            fault = self.settings.fault
        self._streams_started += 1
        if fault == "hang":
            await asyncio.sleep(3600)  # ends when the client goes away and aiohttp cancels us
        response = await self._start_stream(request)
        try:
            if self.settings.replay is not None:
                await self._replay(response, arrived)
            else:
                await self._stream(request, response, answer, fault)
        except ConnectionResetError:  # the client went away (a timeout, a killed worker): nothing to do
            pass
        return response

    def _plan(self, body: dict[str, Any], arrived: float) -> _Answer:
        n_tokens = output_length(self.settings, body)
        n_prompt = prompt_tokens(body)
        return _Answer(
            completion_id=f"chatcmpl-mock-{uuid.uuid4().hex[:12]}",
            model=body.get("model") or self.settings.model,
            n_tokens=n_tokens,
            usage={"prompt_tokens": n_prompt, "completion_tokens": n_tokens, "total_tokens": n_prompt + n_tokens},
            finish_reason="length" if body.get("max_tokens") == n_tokens else "stop",
            first_at=arrived + self.settings.ttft_ms / 1000,
            itl_s=self.settings.itl_ms / 1000,
            include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
        )

    async def _replay(self, response: web.StreamResponse, arrived: float) -> None:
        loop = asyncio.get_running_loop()
        for ms, data in self.settings.replay or ():
            await _sleep_until(loop, arrived + ms / 1000)
            await response.write(data)
        await response.write_eof()

    async def _stream(
        self, request: web.Request, response: web.StreamResponse, answer: _Answer, fault: str | None
    ) -> None:
        loop = asyncio.get_running_loop()
        await response.write(answer.chunk({"role": "assistant", "content": ""}))
        for i in range(answer.n_tokens):
            if fault is not None and i == self.settings.fault_after:
                if fault == "stall":
                    await asyncio.sleep(3600)
                elif fault == "drop":
                    request.transport.abort()
                    return
                elif fault == "garbage":
                    await response.write(b"data: {this is not json\n\n")
            await _sleep_until(loop, answer.first_at + i * answer.itl_s)
            await response.write(answer.chunk({"content": token_text(i)}))
        await response.write(answer.chunk({}, answer.finish_reason))
        if answer.include_usage:
            usage_chunk = {"id": answer.completion_id, "object": "chat.completion.chunk", "model": answer.model,
                           "choices": [], "usage": answer.usage}
            await response.write(b"data: " + orjson.dumps(usage_chunk) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()

    @staticmethod
    async def _start_stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return response


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 picks a free one (read it back with getsockname)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def serve(settings: MockSettings, sock: socket.socket) -> None:
    """Serve on ``sock`` until interrupted (SIGINT/SIGTERM)."""
    web.run_app(MockServer(settings).app(), sock=sock, print=None, access_log=None, handle_signals=True)
