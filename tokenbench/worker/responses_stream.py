"""OpenAI's Responses API, ``/v1/responses`` (``--api responses``), streamed: typed events.

``response.output_text.delta`` is answer text, ``response.reasoning_text.delta`` and
``response.reasoning_summary_text.delta`` reasoning, ``response.function_call_arguments.delta`` a
tool call (answer); ``response.completed`` (or ``response.incomplete``, when max_output_tokens cut
it) ends the stream with the usage; ``response.failed`` and ``error`` fail the request.
"""

from __future__ import annotations

from typing import Any

from tokenbench.shared.endpoint import Endpoint
from tokenbench.shared.records import ErrorType, JobSpec
from tokenbench.worker.sse import SSEEvent
from tokenbench.worker.stream_failure import StreamFailure
from tokenbench.worker.stream_reader import StreamReader, TokenChunk, error_message, json_object, text_field

ANSWER_DELTAS = ("response.output_text.delta", "response.function_call_arguments.delta")
REASONING_DELTAS = ("response.reasoning_text.delta", "response.reasoning_summary_text.delta")
ENDINGS = {"response.completed": "stop", "response.incomplete": "length"}


def responses_body(spec: JobSpec, endpoint: Endpoint, max_tokens: int) -> dict[str, Any]:
    body: dict[str, Any] = {"model": endpoint.model, "max_output_tokens": max_tokens}
    if endpoint.reasoning_effort:
        body["reasoning"] = {"effort": endpoint.reasoning_effort}
    return {**body, **endpoint.extra_body, "input": spec.messages}


class ResponsesStreamReader(StreamReader):
    def on_event(self, event: SSEEvent) -> None:
        data = json_object(event)
        kind = data.get("type") or event.event
        if kind in ANSWER_DELTAS or kind in REASONING_DELTAS:
            text = data.get("delta")
            if isinstance(text, str) and text:
                self.text_parts.append(text)
                reasoning = kind in REASONING_DELTAS
                if not reasoning:
                    self.answer_parts.append(text)
                self.token_chunks.append(TokenChunk(event.received_ns, reasoning=reasoning,
                                                    reasoning_chars=len(text) if reasoning else 0,
                                                    answer_chars=0 if reasoning else len(text)))
        elif kind == "response.created" and isinstance(data.get("response"), dict):
            self._read_response(data["response"])
        elif kind in ENDINGS and isinstance(data.get("response"), dict):
            self._read_response(data["response"])
            self.finish_reason, self.done = ENDINGS[kind], True
        elif kind == "response.failed":
            response = data.get("response") if isinstance(data.get("response"), dict) else {}
            raise StreamFailure(ErrorType.STREAM_ERROR, error_message(response or data))

    def _read_response(self, response: dict[str, Any]) -> None:
        self.model = self.model or text_field(response.get("model"))
        self.generation_id = self.generation_id or text_field(response.get("id"))
        usage = response.get("usage")
        if not isinstance(usage, dict):
            return
        if isinstance(usage.get("output_tokens"), int):
            self.completion_tokens = usage["output_tokens"]
        if isinstance(usage.get("input_tokens"), int):
            self.prompt_tokens = usage["input_tokens"]
        for details, key, name in (("input_tokens_details", "cached_tokens", "cached_tokens"),
                                   ("output_tokens_details", "reasoning_tokens", "reasoning_tokens")):
            section = usage.get(details)
            value = section.get(key) if isinstance(section, dict) else None
            if isinstance(value, int):
                setattr(self, name, value)
