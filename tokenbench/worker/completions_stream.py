"""The (legacy) text-completions API, ``/v1/completions`` (``--api completions``): the prompt is one
text, and each stream event carries ``choices[0].text``. vLLM, SGLang and OpenAI serve it."""

from __future__ import annotations

from typing import Any

from tokenbench.shared.endpoint import Endpoint
from tokenbench.shared.records import JobSpec
from tokenbench.worker.chat_stream import ChatStreamReader
from tokenbench.worker.stream_reader import TokenChunk


def prompt_text(messages: list[dict[str, Any]]) -> str:
    """A chat's messages as one prompt: their contents, a blank line apart (one message: its text)."""
    return "\n\n".join(str(m.get("content", "")) for m in messages)


def completions_body(spec: JobSpec, endpoint: Endpoint, max_tokens: int) -> dict[str, Any]:
    body: dict[str, Any] = {"model": endpoint.model, endpoint.max_tokens_param: max_tokens,
                            "stream_options": {"include_usage": True}}
    if endpoint.ignore_eos:
        body["ignore_eos"] = True
    return {**body, **endpoint.extra_body, "prompt": prompt_text(spec.messages)}


class CompletionsStreamReader(ChatStreamReader):
    """Read as a chat stream (usage, finish reasons, errors, [DONE]), but a choice's text is ``text``."""

    def _read_choice(self, choice: dict[str, Any], received_ns: int) -> TokenChunk | None:
        text = choice.get("text")
        if isinstance(text, str) and text:
            return super()._read_choice({**choice, "delta": {"content": text}}, received_ns)
        return super()._read_choice({**choice, "delta": None}, received_ns)
