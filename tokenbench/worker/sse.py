"""An incremental Server-Sent Events parser (WHATWG rules) that keeps each event's receive time.

Bytes are split into lines before decoding, so a UTF-8 character split across network reads is
reassembled, and U+2028/U+2029 inside JSON strings are never taken as line breaks. Lines end at
LF, CRLF or CR (also a CRLF split across two reads); comment lines are ignored; one leading BOM
is dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tokenbench.shared.records import ErrorType
from tokenbench.worker.stream_failure import StreamFailure

_END_OF_LINE = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"
MAX_LINE_BYTES = 16 * 2**20  # a line (an event's data) longer than this fails the stream


@dataclass(frozen=True)
class SSEEvent:
    data: str
    event: str = "message"
    id: str | None = None
    received_ns: int = 0  # monotonic time of the network read that completed the event


class SSEParser:
    """Feed it the body as it arrives; it returns the events each read completes."""

    def __init__(self) -> None:
        self._buffer = b""
        self._pieces: list[bytes] = []  # reads without a line end, joined when one comes
        self._held = 0  # their length
        self._at_start = True  # a BOM may still come
        self._skip_lf = False  # the last read ended in CR: an LF that follows belongs to it
        self._data_lines: list[str] = []
        self._event_type = ""
        self._last_id: str | None = None
        self._has_fields = False  # some field of the current event has been seen
        self.events_seen = 0  # events dispatched so far

    def feed(self, chunk: bytes, received_ns: int = 0) -> list[SSEEvent]:
        """The events this read completes. A line longer than ``MAX_LINE_BYTES`` fails the stream
        (``line_too_long``); reads that only extend a line are kept as pieces, so a long line costs
        time in proportion to its length, not its square."""
        if b"\n" not in chunk and b"\r" not in chunk:
            self._hold(chunk)
            return []
        if self._pieces:
            self._pieces.append(chunk)
            chunk, self._pieces, self._held = b"".join(self._pieces), [], 0
        if not self._buffer and not self._skip_lf and not self._at_start and b"\r" not in chunk:
            return self._feed_lf_lines(chunk, received_ns)
        if self._skip_lf and chunk:
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
            self._skip_lf = False
        buffer = self._buffer + chunk if self._buffer else chunk
        if self._at_start:
            if len(buffer) < len(_BOM) and _BOM.startswith(buffer):
                self._buffer = buffer
                return []
            if buffer.startswith(_BOM):
                buffer = buffer[len(_BOM) :]
            self._at_start = False

        events: list[SSEEvent] = []
        start = 0
        for match in _END_OF_LINE.finditer(buffer):
            line = buffer[start : match.start()]
            start = match.end()
            if match.group() == b"\r" and start == len(buffer):
                self._skip_lf = True
            event = self._process_line(line, received_ns)
            if event is not None:
                events.append(event)
        self._buffer = buffer[start:]
        self._check_line_length(len(self._buffer))
        return events

    def _hold(self, chunk: bytes) -> None:
        """A read with no line end: it only extends the line in progress."""
        if not chunk:
            return
        if not self._pieces and self._buffer:
            self._pieces.append(self._buffer)
            self._held, self._buffer = len(self._buffer), b""
        self._pieces.append(chunk)
        self._held += len(chunk)
        self._check_line_length(self._held)

    def _check_line_length(self, length: int) -> None:
        if length > MAX_LINE_BYTES:
            raise StreamFailure(ErrorType.LINE_TOO_LONG, f"an event-stream line passed {MAX_LINE_BYTES:,} bytes")

    def _feed_lf_lines(self, chunk: bytes, received_ns: int) -> list[SSEEvent]:
        """``feed`` for the common read: nothing held over, lines ending in LF only (a split is
        several times faster than the regular expression that also finds CR and CRLF)."""
        lines = chunk.split(b"\n")
        self._buffer = lines.pop()  # after the last LF: the start of a line still to come
        self._check_line_length(len(self._buffer))
        events = []
        for line in lines:
            event = self._process_line(line, received_ns)
            if event is not None:
                events.append(event)
        return events

    @property
    def has_partial_event(self) -> bool:
        """True when the body so far ends inside an event (an unterminated line or event)."""
        return bool(self._buffer) or bool(self._pieces) or self._has_fields

    def _process_line(self, raw: bytes, received_ns: int) -> SSEEvent | None:
        if not raw:
            return self._dispatch(received_ns)
        line = raw.decode("utf-8", errors="replace")
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        self._has_fields = True
        if name == "data":
            self._data_lines.append(value)
        elif name == "event":
            self._event_type = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        # "retry" and unknown fields do not change what we measure.
        return None

    def _dispatch(self, received_ns: int) -> SSEEvent | None:
        if not self._has_fields:
            return None
        data_lines, event_type = self._data_lines, self._event_type
        self._data_lines, self._event_type, self._has_fields = [], "", False
        if not data_lines:
            return None
        self.events_seen += 1
        return SSEEvent(
            data="\n".join(data_lines),
            event=event_type or "message",
            id=self._last_id,
            received_ns=received_ns,
        )
