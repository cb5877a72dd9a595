"""What the mock's stream says, event by event, in the dialects real servers speak.

``plan_stream`` lays out one response: keep-alive comments, the role chunk, token chunks (one or
several tokens each, reasoning in any of the known styles), the finish and usage chunks, and
``[DONE]``, each with the time it is due. ``frame`` then dresses an event in the SSE variants a
parser must survive (CRLF or CR line endings, a BOM, multi-line data, id/retry/event fields).
Pure functions: the server only schedules the writes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

REASONING_STYLES = ("reasoning", "reasoning_content", "reasoning_details", "reasoning_details_cumulative", "think")
# openai: the usage chunk has `choices: []`; null-choices / no-choices: `choices: null` / no key (seen
# from other OpenAI-compatible servers); openrouter: see StreamShape.usage_style.
USAGE_STYLES = ("openai", "null-choices", "no-choices", "openrouter")
ERROR_STYLES = ("openrouter", "openai", "vllm")  # the mid-stream error chunk of the `error` fault
SSE_VARIANTS = ("crlf", "cr", "bom", "multiline", "fields", "unicode", "split=N", "batch=N")
KEEPALIVE = b": OPENROUTER PROCESSING\n\n"
MOCK_PROVIDER = "MockProvider"
COST_PER_TOKEN = 1e-6

_WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "tempor", "magna", "aliqua", "veniam", "nostrud")
# Multi-byte UTF-8 (split across reads by `split=N`) and U+2028/U+2029, which are not line breaks.
_UNICODE_WORDS = ("café", "naïve", "😀", "a\u2028b", "日本語", "c\u2029d")


@dataclass(frozen=True)
class StreamShape:
    """How the mock's streamed responses look (the `mock-server` switches)."""

    reasoning: str | None = None  # one of REASONING_STYLES
    reasoning_tokens: int = 0  # the first N tokens are reasoning
    tokens_per_chunk: int = 1
    continuous_usage: bool = False  # running usage on every chunk (vLLM continuous_usage_stats)
    logprobs: bool = False  # logprobs.content with one entry per token on every token chunk
    usage_style: str = "openai"  # "openrouter": provider, gen- id, cost, usage chunk repeating finish_reason
    keepalive_ms: float | None = None  # comment lines before the first token, this often
    error_style: str = "openrouter"  # one of ERROR_STYLES
    sse: tuple[str, ...] = ()  # SSE_VARIANTS

    def sse_number(self, name: str) -> int | None:
        """The N of a ``name=N`` variant, if given."""
        for variant in self.sse:
            key, _, value = variant.partition("=")
            if key == name:
                return int(value)
        return None


def parse_sse_variants(text: str) -> tuple[str, ...]:
    """``"crlf,split=7"`` -> ``("crlf", "split=7")``; ValueError naming an unknown variant."""
    variants = tuple(v.strip() for v in text.split(",") if v.strip())
    for variant in variants:
        key, sep, value = variant.partition("=")
        known = f"{key}=N" in SSE_VARIANTS if sep else key in SSE_VARIANTS
        if not known or (sep and not (value.isdigit() and int(value) > 0)):
            raise ValueError(f"unknown SSE variant {variant!r}: use {', '.join(SSE_VARIANTS)}")
    if {"crlf", "cr"} <= set(variants):
        raise ValueError("choose one of crlf and cr")
    return variants


@dataclass(frozen=True)
class PlannedEvent:
    at_s: float  # seconds after the request arrived
    data: bytes  # one SSE event (LF line endings)
    tokens: int = 0  # tokens it carries
    tokens_before: int = 0  # tokens sent before it


@dataclass(frozen=True)
class Completion:
    """One request's answer: who, how long, and when its tokens are due."""

    completion_id: str
    model: str
    n_tokens: int
    n_prompt: int
    finish_reason: str
    ttft_s: float
    itl_s: float
    include_usage: bool
    n_cached: int | None = None  # prompt tokens served from the (simulated) prefix cache; None: no cache


def token_text(i: int, unicode: bool = False) -> str:
    words = _UNICODE_WORDS if unicode else _WORDS
    return " " + words[i % len(words)]


def plan_stream(shape: StreamShape, answer: Completion) -> list[PlannedEvent]:
    """Every event of the streamed answer, in the order and at the times they are due."""
    envelope = _Envelope(shape, answer)
    events: list[PlannedEvent] = []
    if shape.keepalive_ms:
        step_s, at_s = shape.keepalive_ms / 1000, 0.0
        while at_s < answer.ttft_s:
            events.append(PlannedEvent(at_s, KEEPALIVE))
            at_s += step_s
    role_usage = _usage(shape, answer, 0) if shape.continuous_usage else None
    events.append(PlannedEvent(0.0, envelope.chunk({"role": "assistant", "content": ""}, usage=role_usage)))
    events.sort(key=lambda e: e.at_s)

    reasoning_total = min(shape.reasoning_tokens, answer.n_tokens) if shape.reasoning else 0
    unicode = "unicode" in shape.sse
    reasoning_sent = ""
    for first in range(0, answer.n_tokens, shape.tokens_per_chunk):
        last = min(first + shape.tokens_per_chunk, answer.n_tokens)
        texts = [token_text(i, unicode) for i in range(first, last)]
        reasoning_text = "".join(texts[: max(0, reasoning_total - first)])
        answer_text = "".join(texts[max(0, reasoning_total - first):])
        reasoning_sent += reasoning_text
        delta = _delta(shape, first, last, answer.n_tokens, reasoning_total, reasoning_text, answer_text,
                       reasoning_sent)
        usage = _usage(shape, answer, last) if shape.continuous_usage else None
        at_s = answer.ttft_s + (last - 1) * answer.itl_s
        logprobs = {"content": [{"token": t, "logprob": -0.5, "top_logprobs": []} for t in texts]} if shape.logprobs \
            else None
        events.append(PlannedEvent(at_s, envelope.chunk(delta, usage=usage, logprobs=logprobs), tokens=last - first,
                                   tokens_before=first))

    end_s = answer.ttft_s + max(answer.n_tokens - 1, 0) * answer.itl_s
    usage = _usage(shape, answer, answer.n_tokens)
    if shape.usage_style == "openrouter":  # the usage chunk repeats the finish reason in one choice
        events.append(PlannedEvent(end_s, envelope.chunk({"role": "assistant", "content": ""},
                                                         finish_reason=answer.finish_reason, usage=usage)))
    else:
        events.append(PlannedEvent(end_s, envelope.chunk({}, finish_reason=answer.finish_reason,
                                                         usage=usage if shape.continuous_usage else None)))
        if answer.include_usage:
            events.append(PlannedEvent(end_s, envelope.chunk(None, usage=usage)))
    events.append(PlannedEvent(end_s, b"data: [DONE]\n\n"))
    return events


def _delta(shape: StreamShape, first: int, last: int, n_tokens: int, reasoning_total: int, reasoning_text: str,
           answer_text: str, reasoning_sent: str) -> dict[str, Any]:
    style = shape.reasoning
    if style == "think":
        opening = "<think>" if first == 0 and reasoning_total else ""
        closes = first <= reasoning_total < last or last == reasoning_total == n_tokens
        closing = "</think>" if reasoning_total and closes else ""
        return {"content": opening + reasoning_text + closing + answer_text}
    delta: dict[str, Any] = {}
    if reasoning_text:
        if style in ("reasoning", "reasoning_content"):
            delta[style] = reasoning_text
        else:  # OpenRouter sends both the plain text and its reasoning_details
            detail = reasoning_sent if style == "reasoning_details_cumulative" else reasoning_text
            delta["reasoning"] = reasoning_text
            delta["reasoning_details"] = [{"type": "reasoning.text", "text": detail, "format": "unknown", "index": 0}]
    if answer_text:
        delta["content"] = answer_text
    return delta


def _usage(shape: StreamShape, answer: Completion, completion_tokens: int) -> dict[str, Any]:
    usage: dict[str, Any] = {"prompt_tokens": answer.n_prompt, "completion_tokens": completion_tokens,
                             "total_tokens": answer.n_prompt + completion_tokens}
    if answer.n_cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": answer.n_cached}
    if shape.usage_style == "openrouter":
        reasoning = min(shape.reasoning_tokens, completion_tokens) if shape.reasoning else 0
        usage["cost"] = round((answer.n_prompt + completion_tokens) * COST_PER_TOKEN, 9)
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return usage


class _Envelope:
    def __init__(self, shape: StreamShape, answer: Completion) -> None:
        self.base: dict[str, Any] = {"id": answer.completion_id, "object": "chat.completion.chunk",
                                     "created": int(time.time()), "model": answer.model}
        self.usage_style = shape.usage_style
        if shape.usage_style == "openrouter":
            self.base["id"] = "gen-" + answer.completion_id.rpartition("-")[2]
            self.base["provider"] = MOCK_PROVIDER

    def chunk(self, delta: dict | None, *, finish_reason: str | None = None, usage: dict | None = None,
              logprobs: dict | None = None) -> bytes:
        payload = dict(self.base)
        if delta is not None:
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            if logprobs is not None:
                choice["logprobs"] = logprobs
            payload["choices"] = [choice]
        elif self.usage_style != "no-choices":
            payload["choices"] = None if self.usage_style == "null-choices" else []
        if usage is not None:
            payload["usage"] = usage
        return b"data: " + orjson.dumps(payload) + b"\n\n"


def frame(event: bytes, variants: tuple[str, ...], number: int) -> bytes:
    """``event`` (LF-framed) as the SSE variants write it; ``number`` is its place in the stream."""
    if event.startswith(b"data: {"):
        if "multiline" in variants:  # JSON may break between tokens; data lines join with "\n"
            head, sep, tail = event[len(b"data: "):].partition(b',"')
            if sep:
                event = b"data: " + head + b",\ndata: " + b'"' + tail
        if "fields" in variants:
            event = f"event: message\nid: {number}\nretry: 3000\n".encode() + event
    if "crlf" in variants:
        event = event.replace(b"\n", b"\r\n")
    elif "cr" in variants:
        event = event.replace(b"\n", b"\r")
    if "bom" in variants and number == 0:
        event = b"\xef\xbb\xbf" + event
    return event


def plan_completion_stream(shape: StreamShape, answer: Completion) -> list[PlannedEvent]:
    """The answer as a text-completions stream (``/v1/completions``): ``choices[0].text`` per chunk."""
    unicode = "unicode" in shape.sse
    base = {"id": "cmpl-" + answer.completion_id.rpartition("-")[2], "object": "text_completion",
            "created": int(time.time()), "model": answer.model}

    def event(text: str, finish_reason: str | None = None, usage: dict | None = None) -> bytes:
        choices = [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}] if usage is None \
            else []
        return b"data: " + orjson.dumps({**base, "choices": choices, **({"usage": usage} if usage else {})}) + b"\n\n"
    events = []
    for first in range(0, answer.n_tokens, shape.tokens_per_chunk):
        last = min(first + shape.tokens_per_chunk, answer.n_tokens)
        text = "".join(token_text(i, unicode) for i in range(first, last))
        finish = answer.finish_reason if last == answer.n_tokens else None
        events.append(PlannedEvent(answer.ttft_s + (last - 1) * answer.itl_s, event(text, finish),
                                   tokens=last - first, tokens_before=first))
    end_s = answer.ttft_s + max(answer.n_tokens - 1, 0) * answer.itl_s
    if answer.include_usage:
        events.append(PlannedEvent(end_s, event("", usage=_usage(shape, answer, answer.n_tokens))))
    events.append(PlannedEvent(end_s, b"data: [DONE]\n\n"))
    return events


def plan_responses_stream(shape: StreamShape, answer: Completion) -> list[PlannedEvent]:
    """The answer as an OpenAI Responses stream: typed events, usage in ``response.completed``."""
    unicode = "unicode" in shape.sse
    response = {"id": "resp_" + answer.completion_id.rpartition("-")[2], "object": "response", "model": answer.model,
                "status": "in_progress"}

    def event(kind: str, **fields: Any) -> bytes:
        return f"event: {kind}\n".encode() + b"data: " + orjson.dumps({"type": kind, **fields}) + b"\n\n"
    reasoning_total = min(shape.reasoning_tokens, answer.n_tokens) if shape.reasoning else 0
    events = [PlannedEvent(0.0, event("response.created", response=response))]
    for first in range(0, answer.n_tokens, shape.tokens_per_chunk):
        last = min(first + shape.tokens_per_chunk, answer.n_tokens)
        at_s = answer.ttft_s + (last - 1) * answer.itl_s
        # With a reasoning style, the first tokens are reasoning text (an item of its own), then the answer.
        parts = (("response.reasoning_text.delta", "rs_0", first, min(last, reasoning_total)),
                 ("response.output_text.delta", "msg_0", max(first, reasoning_total), last))
        for kind, item, lo, hi in parts:
            if lo < hi:
                text = "".join(token_text(i, unicode) for i in range(lo, hi))
                events.append(PlannedEvent(at_s, event(kind, item_id=item, output_index=int(item == "msg_0"),
                                                       content_index=0, delta=text),
                                           tokens=hi - lo, tokens_before=lo))
    end_s = answer.ttft_s + max(answer.n_tokens - 1, 0) * answer.itl_s
    usage: dict[str, Any] = {"input_tokens": answer.n_prompt, "output_tokens": answer.n_tokens,
                             "total_tokens": answer.n_prompt + answer.n_tokens}
    if answer.n_cached is not None:
        usage["input_tokens_details"] = {"cached_tokens": answer.n_cached}
    if reasoning_total:
        usage["output_tokens_details"] = {"reasoning_tokens": reasoning_total}
    ending = "response.incomplete" if answer.finish_reason == "length" else "response.completed"
    events.append(PlannedEvent(end_s, event(ending, response={**response, "status": ending.rpartition(".")[2],
                                                               "usage": usage})))
    return events


def plan_anthropic_stream(shape: StreamShape, answer: Completion) -> list[PlannedEvent]:
    """The same answer as an Anthropic Messages stream: reasoning as a thinking block, then text."""
    unicode = "unicode" in shape.sse
    reasoning_total = min(shape.reasoning_tokens, answer.n_tokens) if shape.reasoning else 0
    message: dict[str, Any] = {
        "id": "msg_" + answer.completion_id.rpartition("-")[2], "type": "message", "role": "assistant",
        "content": [], "model": answer.model, "stop_reason": None,
        "usage": {"input_tokens": answer.n_prompt - (answer.n_cached or 0), "output_tokens": 1,
                  **({"cache_read_input_tokens": answer.n_cached} if answer.n_cached is not None else {})}}
    events = [PlannedEvent(0.0, _named("message_start", {"type": "message_start", "message": message})),
              PlannedEvent(0.0, _named("ping", {"type": "ping"}))]
    block = -1
    for first in range(0, answer.n_tokens, shape.tokens_per_chunk):
        last = min(first + shape.tokens_per_chunk, answer.n_tokens)
        at_s = answer.ttft_s + (last - 1) * answer.itl_s
        parts = (("thinking", first, min(last, reasoning_total)), ("text", max(first, reasoning_total), last))
        for kind, lo, hi in parts:
            if lo >= hi:
                continue
            if block < 0 or (kind == "text" and block == 0 and reasoning_total):
                if block >= 0:
                    events.append(PlannedEvent(at_s, _named("content_block_stop", {"type": "content_block_stop",
                                                                                   "index": block})))
                block += 1
                start = {"type": kind, kind: ""}
                events.append(PlannedEvent(at_s, _named("content_block_start", {
                    "type": "content_block_start", "index": block, "content_block": start})))
            text = "".join(token_text(i, unicode) for i in range(lo, hi))
            delta = {"type": f"{kind}_delta", kind: text}
            events.append(PlannedEvent(at_s, _named("content_block_delta", {
                "type": "content_block_delta", "index": block, "delta": delta}), tokens=hi - lo, tokens_before=lo))
    end_s = answer.ttft_s + max(answer.n_tokens - 1, 0) * answer.itl_s
    stop_reason = "max_tokens" if answer.finish_reason == "length" else "end_turn"
    events += [
        PlannedEvent(end_s, _named("content_block_stop", {"type": "content_block_stop", "index": max(block, 0)})),
        PlannedEvent(end_s, _named("message_delta", {"type": "message_delta",
                                                     "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                                     "usage": {"output_tokens": answer.n_tokens}})),
        PlannedEvent(end_s, _named("message_stop", {"type": "message_stop"})),
    ]
    return events


def _named(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n"


def midstream_error(style: str) -> bytes:
    """The error chunk a server sends inside a 200 stream, in the dialect of ``style``."""
    message = "mock: provider disconnected mid-stream"
    chunk: dict[str, Any]
    if style == "openai":
        chunk = {"error": {"message": message, "type": "server_error", "code": None}}
    elif style == "vllm":
        chunk = {"object": "error", "message": message, "type": "InternalServerError", "code": 500}
    else:  # OpenRouter: a top-level error and finish_reason "error"
        chunk = {"id": "gen-mock-error", "object": "chat.completion.chunk", "provider": MOCK_PROVIDER,
                 "error": {"code": "server_error", "message": message},
                 "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def anthropic_error() -> bytes:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "mock: overloaded mid-stream"}}
    return b"event: error\ndata: " + orjson.dumps(error) + b"\n\n"
