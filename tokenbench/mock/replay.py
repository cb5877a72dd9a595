"""Recorded streams with their receive times (``*.timed.tsv``), replayed by the mock server."""

from __future__ import annotations

from pathlib import Path

from tokenbench.shared.errors import TokenbenchError

TimedReads = list[tuple[float, bytes]]  # (ms after the request was sent, the bytes of one network read)


def load_timed_transcript(path: Path) -> TimedReads:
    """Read a TSV of ``ms_since_request_sent, read_index, raw_line`` rows (one header row) into reads."""
    try:
        rows = path.read_text(encoding="utf-8").splitlines()[1:]
    except OSError as exc:
        raise TokenbenchError(f"cannot read {path}: {exc.strerror or exc}") from None
    reads: dict[int, list] = {}
    for number, row in enumerate(rows, start=2):
        try:
            ms, read_index, raw_line = row.split("\t", 2)
            entry = reads.setdefault(int(read_index), [float(ms), b""])
        except ValueError:
            raise TokenbenchError(f"{path}:{number}: expected ms<TAB>read_index<TAB>line") from None
        entry[1] += raw_line.encode() + b"\n"
    if not reads:
        raise TokenbenchError(f"{path}: no rows")
    return [(ms, data) for ms, data in (reads[i] for i in sorted(reads))]
