"""What every API's stream reader shares: the token chunks it finds, the reader's own state, and the
helpers that read event data (JSON objects, error messages, names). One module per API reads its
events (chat_stream, anthropic_stream, responses_stream, completions_stream)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from tokenbench.shared.records import ErrorType
from tokenbench.worker.sse import SSEEvent
from tokenbench.worker.stream_failure import MESSAGE_LIMIT, StreamFailure


def error_message(body: Any) -> str:
    """The human part of a provider's error object (``{"error": {"message": ...}}`` and variants)."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            for key in ("message", "detail", "msg"):
                if inner.get(key):
                    return str(inner[key])
        elif inner:
            return str(inner)
    return orjson.dumps(body).decode()[:MESSAGE_LIMIT]


@dataclass
class TokenChunk:
    """One token-carrying chunk: when it arrived and what it carried."""

    received_ns: int
    reasoning: bool = False  # carried reasoning text (or a think tag)
    answer_chars: int = 0  # characters of answer text
    reasoning_chars: int = 0
    running_tokens: int | None = None  # usage.completion_tokens sent on this very chunk
    logprob_tokens: int | None = None  # entries of logprobs.content on this chunk
    server_sent_ns: int | None = None  # the mock's write time, when it stamps it (shared/calibration.py)


class StreamReader:
    """What a stream said, whatever its API: token chunks, usage, finish reason, who served it.

    Subclasses read one API's events; ``on_event`` takes each SSE event as it arrives.
    """

    def __init__(self) -> None:
        self.token_chunks: list[TokenChunk] = []
        self.completion_tokens: int | None = None
        self.reasoning_tokens: int | None = None  # the server's own count of reasoning tokens
        self.prompt_tokens: int | None = None  # every input token, cached or not
        self.cached_tokens: int | None = None  # of those, read from the server's prompt cache
        self.tokens_before_first_chunk = 0  # a running completion-token count sent before any token
        self.finish_reason: str | None = None
        self.model: str | None = None
        self.provider: str | None = None  # OpenRouter: who served it
        self.generation_id: str | None = None
        self.cost: float | None = None  # usage.cost (OpenRouter, in credits)
        self.done = False
        self.text_parts: list[str] = []  # every piece of generated text, in order (answer, reasoning, tool calls)
        self.answer_parts: list[str] = []  # the answer's text alone: what a conversation sends back as history

    def on_event(self, event: SSEEvent) -> None:
        raise NotImplementedError

    def check_complete(self) -> None:
        """Raise unless the stream ended properly: with its end marker or a finish reason."""
        if not self.done and self.finish_reason is None:
            raise StreamFailure(ErrorType.TRUNCATED_STREAM, "the stream ended without an end marker or a finish reason")


def text_field(value: Any) -> str | None:
    """A name a server sent (model, provider, id) as text, whatever its shape: a string, a number,
    or an object with a ``name``; None for anything else. Servers do send ``"provider": {"name": ...}``."""
    if isinstance(value, str):
        return value[:MESSAGE_LIMIT] or None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, dict):
        return text_field(value.get("name"))
    return None


def json_object(event: SSEEvent) -> dict[str, Any]:
    """The event's data as a JSON object; an ``event: error`` or an error object fails the request."""
    try:
        data = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        if event.event == "error":
            raise StreamFailure(ErrorType.STREAM_ERROR, event.data) from None
        raise StreamFailure(ErrorType.MALFORMED_CHUNK, f"not JSON: {event.data[:200]!r}") from None
    if not isinstance(data, dict):
        raise StreamFailure(ErrorType.MALFORMED_CHUNK, f"not a JSON object: {event.data[:200]!r}")
    if event.event == "error" or data.get("error") or data.get("object") == "error" or data.get("type") == "error":
        raise StreamFailure(ErrorType.STREAM_ERROR, error_message(data))
    return data
