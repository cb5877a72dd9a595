"""The APIs a worker speaks, one object each: the request body, the API's own headers and how the
key is sent, and the reader of its stream. Chosen once per request from ``Endpoint.api``; a new
API is one new module and one entry here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tokenbench.shared.endpoint import Endpoint
from tokenbench.shared.records import JobSpec
from tokenbench.worker.anthropic_stream import ANTHROPIC_HEADERS, AnthropicStreamReader, anthropic_body
from tokenbench.worker.chat_stream import ChatStreamReader, chat_body
from tokenbench.worker.completions_stream import CompletionsStreamReader, completions_body
from tokenbench.worker.responses_stream import ResponsesStreamReader, responses_body
from tokenbench.worker.stream_reader import StreamReader


def bearer(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


@dataclass(frozen=True)
class Dialect:
    body: Callable[[JobSpec, Endpoint, int], dict]  # (spec, endpoint, max_tokens) -> the request body
    reader: Callable[[], StreamReader]
    key_header: Callable[[str], dict[str, str]] = bearer  # how the API key goes, unless --api-key-header
    headers: dict[str, str] = field(default_factory=dict)  # the API's own


DIALECTS: dict[str, Dialect] = {
    "openai": Dialect(chat_body, ChatStreamReader),
    "anthropic": Dialect(anthropic_body, AnthropicStreamReader, key_header=lambda key: {"x-api-key": key},
                         headers=ANTHROPIC_HEADERS),
    "completions": Dialect(completions_body, CompletionsStreamReader),
    "responses": Dialect(responses_body, ResponsesStreamReader),
}
