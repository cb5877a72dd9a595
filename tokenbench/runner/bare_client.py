"""The least a client can do: the yardstick that `tokenbench calibrate` and benchmarks/scale.py hold
tokenbench's workers to.

``concurrency`` asyncio tasks share one aiohttp session (vLLM's `bench serve` client); each sends
one unmeasured warm-up request, then ``requests_each`` measured ones back to back, and notes when
each network read returned and, against a mock started with ``--stamp-send-time``, when the server
wrote each token. No Redis, no queue, no record: what is left is the floor of timing a stream.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp
import orjson

from tokenbench.shared.calibration import SEND_STAMP_FIELD

_CONTENTS = (b'"content":"', b'"content": "')  # compact JSON, or with spaces (llama.cpp's server)
_EMPTY_CONTENTS = (b'"content":""', b'"content": ""')
_STAMP = b'"' + SEND_STAMP_FIELD.encode() + b'":'


@dataclass
class BareRequest:
    """One measured request of one of the client's streams: its send and end
    (``time.perf_counter_ns``), and for each token chunk when its read returned and, when the mock
    stamps them, when the mock wrote it."""

    stream: int
    sent_ns: int
    ended_ns: int = 0
    token_received_ns: list[int] = field(default_factory=list)
    token_sent_ns: list[int] = field(default_factory=list)


def carries_content(event: bytes) -> bool:
    """Whether an SSE event's delta has non-empty content (a token), without parsing its JSON."""
    return any(c in event for c in _CONTENTS) and not any(e in event for e in _EMPTY_CONTENTS)


async def bare_requests(url: str, concurrency: int, requests_each: int, max_tokens: int, model: str = "mock-model",
                        prompt: str = "calibrate") -> list[BareRequest]:
    body = orjson.dumps({"model": model, "stream": True, "max_tokens": max_tokens,
                         "messages": [{"role": "user", "content": prompt}]})
    headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
    measured: list[BareRequest] = []

    async def one_stream(session: aiohttp.ClientSession, stream: int) -> None:
        for number in range(requests_each + 1):
            request = BareRequest(stream, sent_ns=time.perf_counter_ns())
            async with session.post(url, data=body, headers=headers) as response:
                while data := await response.content.readany():
                    received = time.perf_counter_ns()
                    for event in data.split(b"\n\n"):
                        if carries_content(event):
                            request.token_received_ns.append(received)
                            at = event.find(_STAMP)
                            if at >= 0:
                                request.token_sent_ns.append(int(event[at + len(_STAMP):].split(b",", 1)[0]))
            request.ended_ns = time.perf_counter_ns()
            if number:  # the first request warms the connection up
                measured.append(request)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                     timeout=aiohttp.ClientTimeout(total=None)) as session:
        await asyncio.gather(*(one_stream(session, stream) for stream in range(concurrency)))
    return measured
