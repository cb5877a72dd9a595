"""The SSE parser: framing rules and reads split anywhere."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import wire_file
from tokenbench.worker.sse import SSEEvent, SSEParser


def parse_reads(reads: list[bytes]) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for t, data in enumerate(reads):
        events.extend(parser.feed(data, received_ns=t))
    return events


def datas(events: list[SSEEvent]) -> list[str]:
    return [e.data for e in events]


def test_one_event_split_across_reads_gets_the_time_of_the_read_that_completes_it():
    events = parse_reads([b"data: hel", b"lo\n", b"\n"])
    assert events == [SSEEvent(data="hello", received_ns=2)]


def test_several_events_in_one_read():
    events = parse_reads([b"data: a\n\ndata: b\n\ndata: c\n\n"])
    assert datas(events) == ["a", "b", "c"]
    assert {e.received_ns for e in events} == {0}


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending(eol):
    body = b"data: one" + eol + eol + b"data: two" + eol + eol
    assert datas(parse_reads([body])) == ["one", "two"]


def test_crlf_split_between_two_reads_is_one_line_end():
    events = parse_reads([b"data: x\r", b"\n\r", b"\ndata: y\r\n\r\n"])
    assert datas(events) == ["x", "y"]


def test_comments_are_ignored_and_dispatch_nothing():
    events = parse_reads([b": OPENROUTER PROCESSING\n\n: keep-alive\n\ndata: real\n\n"])
    assert datas(events) == ["real"]


def test_multi_line_data_joins_with_newline_and_fields_are_read():
    events = parse_reads([b"event: delta\nid: 7\nretry: 100\ndata: a\ndata:b\n\n"])
    assert events == [SSEEvent(data="a\nb", event="delta", id="7")]


def test_leading_bom_is_dropped_even_when_split():
    assert datas(parse_reads([b"\xef", b"\xbb\xbfdata: x\n\n"])) == ["x"]


def test_utf8_character_split_across_reads():
    encoded = "data: café ✓\n\n".encode()
    cut = encoded.index("✓".encode()) + 1
    assert datas(parse_reads([encoded[:cut], encoded[cut:]])) == ["café ✓"]


def test_unicode_line_separators_inside_json_are_not_line_breaks():
    body = 'data: {"content": "a\u2028b\u2029c"}\n\n'.encode()
    assert datas(parse_reads([body])) == ['{"content": "a\u2028b\u2029c"}']


def test_partial_event_at_end_is_reported():
    parser = SSEParser()
    parser.feed(b"data: complete\n\ndata: cut off", 0)
    assert parser.has_partial_event
    finished = SSEParser()
    finished.feed(b"data: complete\n\n", 0)
    assert not finished.has_partial_event
    unterminated = SSEParser()
    unterminated.feed(b"data: no blank line\n", 0)
    assert unterminated.has_partial_event


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_split_of_a_recorded_stream_gives_the_same_events(data):
    body = wire_file("transformers-serve-cb.recorded.sse").read_bytes()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=40)))
    reads = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)])]
    assert datas(parse_reads(reads)) == datas(parse_reads([body]))
    assert len(parse_reads([body])) == 66


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_random_bytes_never_raise(reads):
    parse_reads(reads)


def _feed_one_line(length: int, piece: int = 16384) -> float:
    """Seconds to feed an event whose data line is ``length`` bytes, in reads of ``piece`` bytes."""
    import time

    parser = SSEParser()
    start = time.perf_counter()
    parser.feed(b"data: ")
    blob = b"x" * piece
    for _ in range(length // piece):
        parser.feed(blob)
    events = parser.feed(b"\n\n")
    elapsed = time.perf_counter() - start
    assert len(events) == 1 and len(events[0].data) == length // piece * piece
    return elapsed


def test_a_long_line_costs_time_in_proportion_to_its_length():
    small, large = _feed_one_line(2 * 2**20), _feed_one_line(8 * 2**20)
    assert large < 10 * small + 0.05, (small, large)  # joining per read would make it ~16x


def test_a_line_past_the_cap_fails_the_stream_as_it_arrives():
    import pytest

    from tokenbench.worker.sse import MAX_LINE_BYTES
    from tokenbench.worker.stream_failure import StreamFailure

    parser = SSEParser()
    parser.feed(b"data: ")
    blob = b"x" * 2**16
    reads = 0
    with pytest.raises(StreamFailure) as failure:
        for reads in range(1, 64 * 2**20 // len(blob) + 1):  # noqa: B007 - read after the loop: a 64 MB line
            parser.feed(blob)
    assert failure.value.error_type == "line_too_long"
    assert reads * len(blob) <= MAX_LINE_BYTES + len(blob)  # it stopped at the cap, not at 64 MB
