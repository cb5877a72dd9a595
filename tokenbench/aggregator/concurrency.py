"""How many requests were really in flight: from the records' send and end times."""

from __future__ import annotations

from collections.abc import Hashable

from tokenbench.shared.records import RequestRecord

# A run whose time-weighted mean concurrency is below this share of its workers says so.
SHORTFALL_SHARE = 0.8


def in_flight_intervals(records: list[RequestRecord]) -> list[tuple[float, float]]:
    """(send, end) of each request that was sent, in epoch seconds; the end is the end of its body or
    its failure. Records without timings (a worker that died or was stopped) have none."""
    return [(r.started_at, r.started_at + r.elapsed_ms / 1000) for r in records if r.elapsed_ms is not None]


def achieved_concurrency(intervals: list[tuple[float, float]]) -> tuple[float | None, int]:
    """(time-weighted mean, peak) number of requests in flight between the first send and the last end."""
    if not intervals:
        return None, 0
    span = max(end for _, end in intervals) - min(start for start, _ in intervals)
    busy = sum(end - start for start, end in intervals)
    # Ends sort before starts at the same instant: back-to-back requests do not overlap.
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return (busy / span if span > 0 else float(len(intervals))), peak


def worker_idle_gaps_ms(records: list[RequestRecord]) -> list[float]:
    """For each stream of each worker process, the time between the end of one of its requests and
    the send of its next: what a closed loop loses to the harness (taking the next job, saving the
    record)."""
    return stream_gaps_ms([((r.worker, r.stream), r.started_at, r.started_at + r.elapsed_ms / 1000)
                           for r in records if r.elapsed_ms is not None])


def stream_gaps_ms(requests: list[tuple[Hashable, float, float]]) -> list[float]:
    """For each stream, the gaps between the end of one of its requests and the beginning of its
    next, in ms; ``requests``: (stream, beginning, end) in seconds on one clock."""
    by_stream: dict[Hashable, list[tuple[float, float]]] = {}
    for stream, begins, ends in requests:
        by_stream.setdefault(stream, []).append((begins, ends))
    gaps = []
    for mine in by_stream.values():
        mine.sort()
        gaps += [(later[0] - earlier[1]) * 1000 for earlier, later in zip(mine, mine[1:])]
    return gaps
