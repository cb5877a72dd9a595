"""What the events of an OpenAI-compatible chat-completions stream mean for the measurement.

A *token-carrying chunk* is one whose first choice's delta has non-empty ``content`` or reasoning
text (``reasoning`` / ``reasoning_content``). A role-only chunk, ``content: ""`` and usage-only
chunks carry no tokens.
"""

from __future__ import annotations

from typing import Any

import orjson

from tokenbench.worker.sse import SSEEvent

DONE_SENTINEL = "[DONE]"
_MESSAGE_LIMIT = 500


class StreamFailure(Exception):
    """The request failed; ``error_type`` is a short stable name, ``message`` the detail."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message[:_MESSAGE_LIMIT]


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
    return orjson.dumps(body).decode()[:_MESSAGE_LIMIT]


class ChatStreamReader:
    """Accumulates, event by event, what the stream says: token chunk times, usage, finish reason."""

    def __init__(self) -> None:
        self.token_chunk_ns: list[int] = []
        self.completion_tokens: int | None = None
        self.prompt_tokens: int | None = None
        self.finish_reason: str | None = None
        self.model: str | None = None
        self.done = False

    def on_event(self, event: SSEEvent) -> None:
        data = event.data
        if data.strip() == DONE_SENTINEL:
            self.done = True
            return
        if event.event == "error":
            raise StreamFailure("stream_error", data)
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise StreamFailure("malformed_chunk", f"not JSON: {data[:200]!r}") from None
        if not isinstance(chunk, dict):
            raise StreamFailure("malformed_chunk", f"not a JSON object: {data[:200]!r}")
        if chunk.get("error") or chunk.get("object") == "error":
            raise StreamFailure("stream_error", error_message(chunk))
        self.model = self.model or chunk.get("model")
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._read_usage(usage)
        choices = chunk.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            self._read_choice(choices[0], event.received_ns)

    def _read_usage(self, usage: dict[str, Any]) -> None:
        if isinstance(usage.get("completion_tokens"), int):
            self.completion_tokens = usage["completion_tokens"]
        if isinstance(usage.get("prompt_tokens"), int):
            self.prompt_tokens = usage["prompt_tokens"]

    def _read_choice(self, choice: dict[str, Any], received_ns: int) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict) and _carries_text(delta):
            self.token_chunk_ns.append(received_ns)
        finish_reason = choice.get("finish_reason")
        if finish_reason == "error":
            raise StreamFailure("stream_error", f"finish_reason 'error': {orjson.dumps(choice).decode()}")
        if finish_reason and self.finish_reason is None:
            self.finish_reason = finish_reason

    def check_complete(self) -> None:
        """Raise unless the stream ended properly: with [DONE] or a finish reason."""
        if not self.done and self.finish_reason is None:
            raise StreamFailure("truncated_stream", "the stream ended without [DONE] or a finish_reason")


def _carries_text(delta: dict[str, Any]) -> bool:
    for key in ("content", "reasoning", "reasoning_content"):
        value = delta.get(key)
        if isinstance(value, str) and value:
            return True
    return False
