"""What the events of an Anthropic Messages stream mean for the measurement (``--api anthropic``).

``text_delta`` is answer text, ``thinking_delta`` reasoning; ``ping`` and the block start/stop
events carry no tokens. Usage is cumulative: ``message_start`` has the input tokens,
``message_delta`` the output tokens so far. The stream ends with ``message_stop`` (no ``[DONE]``).
"""

from __future__ import annotations

from typing import Any

from tokenbench.shared.endpoint import ANTHROPIC_VERSION, Endpoint
from tokenbench.shared.records import JobSpec
from tokenbench.worker.sse import SSEEvent
from tokenbench.worker.stream_reader import StreamReader, TokenChunk, json_object, text_field

ANTHROPIC_HEADERS = {"anthropic-version": ANTHROPIC_VERSION}
# Where each kind of content-block delta carries its generated text.
_DELTA_TEXT_FIELDS = {"thinking_delta": "thinking", "text_delta": "text", "input_json_delta": "partial_json"}


def anthropic_body(spec: JobSpec, endpoint: Endpoint, max_tokens: int) -> dict[str, Any]:
    """A Messages request: system messages go to ``system``, the rest stay messages."""
    system = "\n\n".join(m["content"] for m in spec.messages if m.get("role") == "system")
    return {"model": endpoint.model, "max_tokens": max_tokens, **({"system": system} if system else {}),
            **endpoint.extra_body, "messages": [m for m in spec.messages if m.get("role") != "system"]}


class AnthropicStreamReader(StreamReader):
    def on_event(self, event: SSEEvent) -> None:
        data = json_object(event)
        kind = data.get("type") or event.event
        if kind == "message_start" and isinstance(data.get("message"), dict):
            message = data["message"]
            self.model = self.model or text_field(message.get("model"))
            self.generation_id = self.generation_id or text_field(message.get("id"))
            self._read_usage(message.get("usage"))
        elif kind == "content_block_delta" and isinstance(data.get("delta"), dict):
            self._read_delta(data["delta"], event.received_ns)
        elif kind == "message_delta":
            delta = data.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason"):
                self.finish_reason = delta["stop_reason"]
            self._read_usage(data.get("usage"))
        elif kind == "message_stop":
            self.done = True

    def _read_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        if isinstance(usage.get("input_tokens"), int):
            # Anthropic's input_tokens counts only what the cache did not serve: the total adds both cache counts.
            cache_read, cache_written = (usage.get(name) for name in ("cache_read_input_tokens",
                                                                       "cache_creation_input_tokens"))
            cache_read = cache_read if isinstance(cache_read, int) else 0
            cache_written = cache_written if isinstance(cache_written, int) else 0
            self.prompt_tokens = usage["input_tokens"] + cache_read + cache_written
            if "cache_read_input_tokens" in usage:
                self.cached_tokens = cache_read
        if isinstance(usage.get("output_tokens"), int) and self.token_chunks:
            self.completion_tokens = usage["output_tokens"]

    def _read_delta(self, delta: dict[str, Any], received_ns: int) -> None:
        kind = delta.get("type")
        field = _DELTA_TEXT_FIELDS.get(kind) if isinstance(kind, str) else None
        text = delta.get(field) if field else None
        if not isinstance(text, str) or not text:
            return
        self.text_parts.append(text)
        if kind == "thinking_delta":
            self.token_chunks.append(TokenChunk(received_ns, reasoning=True, reasoning_chars=len(text)))
        else:  # answer text, or a tool call's input: generated text too
            self.token_chunks.append(TokenChunk(received_ns, answer_chars=len(text)))
            if kind == "text_delta":
                self.answer_parts.append(text)
