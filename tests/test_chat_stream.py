"""What chunks mean: token-carrying chunks, usage, finish reasons, errors (on the provider transcripts)."""

from __future__ import annotations

import orjson
import pytest

from tests.conftest import wire_file
from tokenbench.worker.anthropic_stream import AnthropicStreamReader
from tokenbench.worker.chat_stream import ChatStreamReader, ReasoningDetails, ThinkTagSplitter
from tokenbench.worker.sse import SSEEvent, SSEParser
from tokenbench.worker.stream_failure import StreamFailure


def read_transcript(name: str) -> ChatStreamReader:
    parser = SSEParser()
    reader = ChatStreamReader()
    for t, line in enumerate(wire_file(name).read_bytes().splitlines(keepends=True)):
        for event in parser.feed(line, received_ns=t):
            reader.on_event(event)
    return reader


def test_openai_role_chunk_and_usage_chunk_carry_no_tokens():
    reader = read_transcript("openai-usage.sse")
    assert len(reader.token_chunks) == 2  # "Hello", " world"
    assert (reader.completion_tokens, reader.prompt_tokens) == (2, 12)
    assert reader.finish_reason == "stop" and reader.done
    reader.check_complete()


def test_openrouter_keepalives_are_not_tokens_and_usage_chunk_is_not_a_second_token():
    reader = read_transcript("openrouter-keepalive.sse")
    assert len(reader.token_chunks) == 2  # "Hi", " there"; the usage chunk's content is ""
    assert reader.completion_tokens == 2
    assert reader.finish_reason == "stop"


def test_openrouter_midstream_error_fails_the_request_with_its_message():
    with pytest.raises(StreamFailure) as failure:
        read_transcript("openrouter-midstream-error.sse")
    assert failure.value.error_type == "stream_error"
    assert "Provider disconnected unexpectedly" in failure.value.message


def test_reasoning_deltas_count_as_generated_tokens():
    reader = read_transcript("vllm-reasoning-continuous-usage.sse")
    assert reader.token_chunks, "reasoning chunks carry tokens"
    assert reader.completion_tokens is not None and reader.completion_tokens > len(reader.token_chunks)


def test_stream_without_done_but_with_finish_reason_is_complete():
    reader = read_transcript("transformers-serve-cb.recorded.sse")
    assert not reader.done
    assert reader.finish_reason == "length"
    assert len(reader.token_chunks) == 64 and reader.completion_tokens == 64
    reader.check_complete()


def test_stream_with_neither_done_nor_finish_reason_is_truncated():
    parser, reader = SSEParser(), ChatStreamReader()
    for event in parser.feed(b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n', 1):
        reader.on_event(event)
    with pytest.raises(StreamFailure) as failure:
        reader.check_complete()
    assert failure.value.error_type == "truncated_stream"


@pytest.mark.parametrize(
    "data, error_type",
    [
        ("not json", "malformed_chunk"),
        ("[1, 2]", "malformed_chunk"),
        ('{"error": {"message": "overloaded"}}', "stream_error"),
        ('{"object": "error", "message": "bad"}', "stream_error"),
    ],
)
def test_bad_or_error_chunks_fail(data, error_type):
    parser, reader = SSEParser(), ChatStreamReader()
    with pytest.raises(StreamFailure) as failure:
        for event in parser.feed(f"data: {data}\n\n".encode(), 0):
            reader.on_event(event)
    assert failure.value.error_type == error_type


def feed_think(pieces: list[str]) -> list[tuple[str, str, bool]]:
    splitter = ThinkTagSplitter()
    return [splitter.feed(piece) for piece in pieces]


def test_think_tags_split_across_chunks_separate_reasoning_from_answer():
    assert feed_think(["<thi", "nk>Let me", " think.</th", "ink>\n\nHello", " there"]) == [
        ("", "", True), ("Let me", "", True), (" think.", "", True), ("", "\n\nHello", True), ("", " there", False)]


def test_content_without_an_opening_think_tag_is_all_answer():
    assert feed_think(["\n", "Hello <think> is", " a tag"]) == [("", "", False), ("", "\nHello <think> is", False),
                                                              ("", " a tag", False)]
    assert feed_think(["<", "b>bold</b>"]) == [("", "", True), ("", "<b>bold</b>", False)]


@pytest.mark.parametrize("pieces", [
    [["a"], ["b"], ["c"]],  # incremental
    [["a"], ["ab"], ["abc"]],  # cumulative
])
def test_reasoning_details_incremental_or_cumulative_give_the_same_text(pieces):
    details = ReasoningDetails()
    new = [details.new_text([{"type": "reasoning.text", "text": p} for p in piece]) for piece in pieces]
    assert new == ["a", "b", "c"] and details.text == "abc"


def test_vllm_reasoning_with_continuous_usage_knows_tokens_per_chunk():
    reader = read_transcript("vllm-reasoning-continuous-usage.sse")
    chunks = reader.token_chunks
    assert [c.reasoning for c in chunks] == [True, True, False]
    assert [c.running_tokens for c in chunks] == [3, 10, 13]
    assert reader.tokens_before_first_chunk == 0 and reader.completion_tokens == 13
    assert chunks[2].answer_chars == len("Hello!")


def test_openrouter_provider_generation_id_and_cost_are_read():
    reader = read_transcript("openrouter-keepalive.sse")
    assert (reader.provider, reader.generation_id, reader.cost) == ("DeepInfra", "gen-1759420128-LjBs", 0.0000952)
    assert reader.reasoning_tokens == 0


def test_anthropic_messages_stream_text_deltas_usage_and_message_stop():
    parser, reader = SSEParser(), AnthropicStreamReader()
    for t, line in enumerate(wire_file("anthropic-messages.sse").read_bytes().splitlines(keepends=True)):
        for event in parser.feed(line, received_ns=t):
            reader.on_event(event)
    assert len(reader.token_chunks) == 2  # "Hello", " world"; ping and block events carry none
    assert (reader.completion_tokens, reader.prompt_tokens) == (3, 12)
    assert (reader.finish_reason, reader.done, reader.model) == ("end_turn", True, "claude-sonnet-4-5")
    reader.check_complete()


def test_anthropic_error_event_fails_with_its_message():
    reader = AnthropicStreamReader()
    event = SSEEvent(event="error", data='{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
                     received_ns=1)
    with pytest.raises(StreamFailure, match="Overloaded"):
        reader.on_event(event)


def test_a_tool_call_only_answer_has_tokens_and_a_first_token():
    """OpenAI's documented tool-call stream: the first delta names the function, later ones carry
    its arguments in pieces, the finish reason is tool_calls; no content at all."""
    pieces = ['{"loc', 'ation":', ' "Paris"}']
    first = {"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}
    deltas = [first] + [{"tool_calls": [{"index": 0, "function": {"arguments": piece}}]} for piece in pieces]
    chunks = [{"choices": [{"index": 0, "delta": delta}]} for delta in deltas]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    parser, reader = SSEParser(), ChatStreamReader()
    for t, data in enumerate([orjson.dumps(chunk) for chunk in chunks] + [b"[DONE]"], 1):
        for event in parser.feed(b"data: " + data + b"\n\n", received_ns=t):
            reader.on_event(event)
    assert [chunk.received_ns for chunk in reader.token_chunks] == [1, 2, 3, 4]  # TTFT: the function's name
    assert [chunk.answer_chars for chunk in reader.token_chunks] == [len("get_weather")] + [len(p) for p in pieces]
    assert reader.finish_reason == "tool_calls" and not any(chunk.reasoning for chunk in reader.token_chunks)


def test_cached_prompt_tokens_are_read_in_both_apis():
    """OpenAI-style usage.prompt_tokens_details.cached_tokens (vLLM, SGLang, OpenRouter), and Anthropic's
    cache fields, where input_tokens counts only the uncached part."""
    openai = ChatStreamReader()
    for t, line in enumerate([b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n',
                              b'data: {"choices":[],"usage":{"prompt_tokens":100,"completion_tokens":1,'
                              b'"prompt_tokens_details":{"cached_tokens":64}}}\n\n', b"data: [DONE]\n\n"]):
        for event in SSEParser().feed(line, received_ns=t):
            openai.on_event(event)
    assert (openai.prompt_tokens, openai.cached_tokens) == (100, 64)
    anthropic = AnthropicStreamReader()
    start = {"type": "message_start", "message": {"id": "msg_1", "model": "claude", "usage": {
        "input_tokens": 20, "cache_read_input_tokens": 200, "cache_creation_input_tokens": 30, "output_tokens": 1}}}
    for event in SSEParser().feed(b"event: message_start\ndata: " + orjson.dumps(start) + b"\n\n", received_ns=0):
        anthropic.on_event(event)
    assert (anthropic.prompt_tokens, anthropic.cached_tokens) == (250, 200)
    plain = ChatStreamReader()
    for event in SSEParser().feed(b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1}}\n\n',
                                  received_ns=0):
        plain.on_event(event)
    assert (plain.prompt_tokens, plain.cached_tokens) == (9, None)


def test_responses_events_reasoning_answer_usage_and_failure():
    from tokenbench.worker.responses_stream import ResponsesStreamReader

    def feed(reader, *events: dict) -> None:
        for t, data in enumerate(events):
            raw = f"event: {data['type']}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n"
            for event in SSEParser().feed(raw, received_ns=t):
                reader.on_event(event)
    reader = ResponsesStreamReader()
    feed(reader, {"type": "response.created", "response": {"id": "resp_1", "model": "gpt-x"}},
         {"type": "response.reasoning_summary_text.delta", "delta": "thinking"},
         {"type": "response.output_text.delta", "delta": "Hello"},
         {"type": "response.output_text.delta", "delta": ""},
         {"type": "response.completed", "response": {"id": "resp_1", "usage": {
             "input_tokens": 12, "input_tokens_details": {"cached_tokens": 8}, "output_tokens": 5,
             "output_tokens_details": {"reasoning_tokens": 3}}}})
    assert [(c.received_ns, c.reasoning) for c in reader.token_chunks] == [(1, True), (2, False)]
    assert (reader.model, reader.generation_id, reader.finish_reason, reader.done) == ("gpt-x", "resp_1", "stop", True)
    assert (reader.completion_tokens, reader.prompt_tokens, reader.cached_tokens, reader.reasoning_tokens) == (
        5, 12, 8, 3)
    reader.check_complete()
    with pytest.raises(StreamFailure, match="server overloaded"):
        failed = {"type": "response.failed", "response": {"error": {"message": "server overloaded"}}}
        feed(ResponsesStreamReader(), failed)
