"""Runs bounded by time: ``--duration`` (the run ends that long after its start; the prompts, cycled,
are only a cap), ``--ramp-up`` (the streams start one by one over it) and ``--measure-after`` (the
report leaves out the requests sent before it).

The run's start is the moment on the Redis clock that the producer writes once every job is
enqueued (the same key an open-loop schedule starts from). A worker sends no request of the run
after its end: it drops the run's jobs still queued, and a conversation sends no further turn.
Requests in flight at the end run to their finish and count; the report says how many ended late.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# When --duration is given without --prompts: the most requests the run may send.
DEFAULT_DURATION_CAP = 20_000
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_SPAN = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*")


def parse_span(text: str) -> float:
    """Seconds in ``text``: ``90``, ``90s``, ``1.5m``, ``2h``; a ValueError naming the form otherwise."""
    match = _SPAN.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a time span such as 90, 90s, 1.5m or 2h")
    return float(match.group(1)) * _UNITS[match.group(2) or ""]


@dataclass(frozen=True)
class TimeBounds:
    duration_s: float | None = None  # the run ends this long after its start
    ramp_up_s: float | None = None  # the first `concurrency` requests go out spread over this
    measure_after_s: float | None = None  # the report counts requests sent from this long after the first one

    def ramp_offsets(self, count: int, concurrency: int) -> list[float | None]:
        """When each of ``count`` jobs is due after the run's start: with a ramp-up, the first
        ``concurrency`` spread evenly over it (stream k starts at k/concurrency of it; the next jobs
        follow as streams free up, so streams in use grow linearly); None: as soon as a stream is free."""
        if not self.ramp_up_s:
            return [None] * count
        return [self.ramp_up_s * index / concurrency if index < concurrency else None for index in range(count)]


UNBOUNDED = TimeBounds()  # a run of its prompts, every one sent as soon as a stream is free
