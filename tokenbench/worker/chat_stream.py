"""What the events of an OpenAI-compatible chat-completions stream mean for the measurement.

A *token-carrying chunk* is one whose first choice's delta has non-empty ``content``, reasoning
text (``reasoning``, ``reasoning_content`` or ``reasoning_details``) or a tool call's function
name or arguments (``tool_calls``, counted as answer). A role-only chunk,
``content: ""`` and usage-only chunks carry no tokens. Reasoning is told apart from the answer by
those fields, or by a ``<think>...</think>`` block at the start of ``content``.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from tokenbench.shared.calibration import SEND_STAMP_FIELD
from tokenbench.shared.endpoint import Endpoint
from tokenbench.shared.records import ErrorType, JobSpec
from tokenbench.worker.sse import SSEEvent
from tokenbench.worker.stream_failure import StreamFailure
from tokenbench.worker.stream_reader import StreamReader, TokenChunk, json_object, text_field

DONE_SENTINEL = "[DONE]"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


class ThinkTagSplitter:
    """Splits streamed ``content`` into reasoning and answer when it starts with ``<think>``.

    Tags may arrive split across chunks; text that could still be the start of a tag is held back
    until the next piece decides it. ``feed`` returns (reasoning text, answer text, saw a tag).
    """

    def __init__(self) -> None:
        self.state = "start"  # start -> reasoning -> answer, or start -> answer
        self._held = ""

    def feed(self, text: str) -> tuple[str, str, bool]:
        text, self._held = self._held + text, ""
        if self.state == "start":
            stripped = text.lstrip()
            if stripped.startswith(THINK_OPEN):
                self.state = "reasoning"
                text = stripped[len(THINK_OPEN):]
                reasoning, answer, _ = self.feed(text)
                return reasoning, answer, True
            if THINK_OPEN.startswith(stripped):  # "", "<", "<th"...: not decided yet
                self._held = text
                return "", "", bool(stripped)
            self.state = "answer"
        if self.state == "reasoning":
            at = text.find(THINK_CLOSE)
            if at >= 0:
                self.state = "answer"
                return text[:at], text[at + len(THINK_CLOSE):], True
            keep = _tag_prefix_length(text, THINK_CLOSE)
            if keep:
                text, self._held = text[:-keep], text[-keep:]
            return text, "", bool(keep)
        return "", text, False


def _tag_prefix_length(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a start of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class ReasoningDetails:
    """OpenRouter's ``reasoning_details[]``: text that is either sent piece by piece or repeated
    whole with each addition. Which one is decided by the second piece: if it extends the text so
    far, the stream is cumulative."""

    def __init__(self) -> None:
        self.text = ""
        self.cumulative: bool | None = None

    def new_text(self, details: list[Any]) -> str:
        piece = "".join(_detail_text(d) for d in details if isinstance(d, dict))
        if not piece:
            return ""
        if self.cumulative is None and self.text:
            self.cumulative = piece.startswith(self.text) and len(piece) > len(self.text)
        new = piece[len(self.text):] if self.cumulative else piece
        self.text = piece if self.cumulative else self.text + piece
        return new


def _detail_text(detail: dict[str, Any]) -> str:
    for key in ("text", "summary"):
        if isinstance(detail.get(key), str):
            return detail[key]
    return ""


def chat_body(spec: JobSpec, endpoint: Endpoint, max_tokens: int) -> dict[str, Any]:
    """An OpenAI-compatible chat-completions request (usage asked for at the stream's end)."""
    body: dict[str, Any] = {"model": endpoint.model, endpoint.max_tokens_param: max_tokens,
                            "stream_options": {"include_usage": True}}
    if endpoint.reasoning_effort:
        if endpoint.mode == "openrouter":
            body["reasoning"] = {"effort": endpoint.reasoning_effort}
        else:
            body["reasoning_effort"] = endpoint.reasoning_effort
    if endpoint.ignore_eos:
        body["ignore_eos"] = True
    return {**body, **endpoint.extra_body, "messages": spec.messages}


class ChatStreamReader(StreamReader):
    """An OpenAI-compatible chat-completions stream (vLLM, SGLang, OpenRouter, OpenAI, ...)."""

    def __init__(self) -> None:
        super().__init__()
        self._think = ThinkTagSplitter()
        self._details = ReasoningDetails()

    def on_event(self, event: SSEEvent) -> None:
        if event.data.strip() == DONE_SENTINEL:
            self.done = True
            return
        chunk = json_object(event)
        self.model = self.model or text_field(chunk.get("model"))
        self.provider = self.provider or text_field(chunk.get("provider"))
        self.generation_id = self.generation_id or text_field(chunk.get("id"))
        choices = chunk.get("choices")
        token_chunk = None
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            token_chunk = self._read_choice(choices[0], event.received_ns)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._read_usage(usage, token_chunk)
        stamp = chunk.get(SEND_STAMP_FIELD)
        if token_chunk is not None and isinstance(stamp, int):
            token_chunk.server_sent_ns = stamp

    def _read_usage(self, usage: dict[str, Any], token_chunk: TokenChunk | None) -> None:
        completion = usage.get("completion_tokens")
        if isinstance(completion, int):
            self.completion_tokens = completion
            if token_chunk is not None:
                token_chunk.running_tokens = completion
            elif not self.token_chunks:
                self.tokens_before_first_chunk = completion
        if isinstance(usage.get("prompt_tokens"), int):
            self.prompt_tokens = usage["prompt_tokens"]
        prompt_details = usage.get("prompt_tokens_details")
        if isinstance(prompt_details, dict) and isinstance(prompt_details.get("cached_tokens"), int):
            self.cached_tokens = prompt_details["cached_tokens"]  # OpenAI, vLLM, SGLang, OpenRouter
        details = usage.get("completion_tokens_details")
        if isinstance(details, dict) and isinstance(details.get("reasoning_tokens"), int):
            self.reasoning_tokens = details["reasoning_tokens"]
        if isinstance(usage.get("cost"), (int, float)) and not isinstance(usage["cost"], bool) \
                and math.isfinite(usage["cost"]):
            self.cost = usage["cost"]

    def _read_choice(self, choice: dict[str, Any], received_ns: int) -> TokenChunk | None:
        finish_reason = choice.get("finish_reason")
        if finish_reason == "error":
            raise StreamFailure(ErrorType.STREAM_ERROR, f"finish_reason 'error': {orjson.dumps(choice).decode()}")
        token_chunk = None
        delta = choice.get("delta")
        if isinstance(delta, dict):
            token_chunk = self._read_delta(delta, received_ns)
        if token_chunk is not None:
            logprobs = choice.get("logprobs")
            if isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
                token_chunk.logprob_tokens = len(logprobs["content"])
            self.token_chunks.append(token_chunk)
        if finish_reason and self.finish_reason is None:
            self.finish_reason = finish_reason
        return token_chunk

    def _read_delta(self, delta: dict[str, Any], received_ns: int) -> TokenChunk | None:
        reasoning = _text(delta, "reasoning") or _text(delta, "reasoning_content")
        details = delta.get("reasoning_details")
        detail_text = self._details.new_text(details) if isinstance(details, list) else ""
        reasoning = reasoning or detail_text  # OpenRouter sends both for the same text
        content = _text(delta, "content")
        tool_calls = delta.get("tool_calls")
        tool_text = _tool_call_text(tool_calls) if isinstance(tool_calls, list) else ""
        if not (reasoning or content or tool_text):  # any content is a token, even one a think tag may still claim
            return None
        self.text_parts.append(reasoning + content + tool_text)  # think tags included: generated too
        think_reasoning, answer, saw_tag = self._think.feed(content) if content else ("", "", False)
        reasoning += think_reasoning
        if answer:
            self.answer_parts.append(answer)
        return TokenChunk(received_ns=received_ns, reasoning=bool(reasoning) or saw_tag,
                          answer_chars=len(answer) + len(tool_text), reasoning_chars=len(reasoning))


def _tool_call_text(tool_calls: list[Any]) -> str:
    """The generated text of ``delta.tool_calls``: each function's name and arguments (an answer the
    model wrote as a tool call is generated tokens, and its first piece is the first token)."""
    pieces = []
    for call in tool_calls:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            pieces += [_text(function, "name"), _text(function, "arguments")]
    return "".join(pieces)


def _text(delta: dict[str, Any], key: str) -> str:
    value = delta.get(key)
    return value if isinstance(value, str) else ""
