"""What chunks mean: token-carrying chunks, usage, finish reasons, errors (on the provider transcripts)."""

from __future__ import annotations

import pytest

from tests.conftest import wire_file
from tokenbench.worker.chat_stream import ChatStreamReader, StreamFailure
from tokenbench.worker.sse import SSEParser


def read_transcript(name: str) -> ChatStreamReader:
    parser = SSEParser()
    reader = ChatStreamReader()
    for t, line in enumerate(wire_file(name).read_bytes().splitlines(keepends=True)):
        for event in parser.feed(line, received_ns=t):
            reader.on_event(event)
    return reader


def test_openai_role_chunk_and_usage_chunk_carry_no_tokens():
    reader = read_transcript("openai-usage.sse")
    assert len(reader.token_chunk_ns) == 2  # "Hello", " world"
    assert (reader.completion_tokens, reader.prompt_tokens) == (2, 12)
    assert reader.finish_reason == "stop" and reader.done
    reader.check_complete()


def test_openrouter_keepalives_are_not_tokens_and_usage_chunk_is_not_a_second_token():
    reader = read_transcript("openrouter-keepalive.sse")
    assert len(reader.token_chunk_ns) == 2  # "Hi", " there"; the usage chunk's content is ""
    assert reader.completion_tokens == 2
    assert reader.finish_reason == "stop"


def test_openrouter_midstream_error_fails_the_request_with_its_message():
    with pytest.raises(StreamFailure) as failure:
        read_transcript("openrouter-midstream-error.sse")
    assert failure.value.error_type == "stream_error"
    assert "Provider disconnected unexpectedly" in failure.value.message


def test_reasoning_deltas_count_as_generated_tokens():
    reader = read_transcript("vllm-reasoning-continuous-usage.sse")
    assert reader.token_chunk_ns, "reasoning chunks carry tokens"
    assert reader.completion_tokens is not None and reader.completion_tokens > len(reader.token_chunk_ns)


def test_stream_without_done_but_with_finish_reason_is_complete():
    reader = read_transcript("transformers-serve-cb.recorded.sse")
    assert not reader.done
    assert reader.finish_reason == "length"
    assert len(reader.token_chunk_ns) == 64 and reader.completion_tokens == 64
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
