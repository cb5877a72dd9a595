"""Open-loop load: when each request of a run is due, as vLLM's ``bench serve`` schedules them.

Requests arrive at ``rate`` per second on average. ``poisson`` draws the gaps from a gamma
distribution of shape ``burstiness`` (1: exponential gaps, a Poisson process; below 1: burstier;
above 1: more even), ``constant`` spaces them exactly 1/rate apart. The first request is due at 0.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

ARRIVALS = ("poisson", "constant")
TRACE = "trace"  # the arrival of a replayed trace: its own send times (producer/trace.py)


@dataclass(frozen=True)
class ArrivalSchedule:
    rate: float  # requests per second (a trace's: on average)
    arrival: str = "poisson"
    burstiness: float = 1.0
    seed: int = 0
    offsets: tuple[float, ...] | None = None  # a trace's send times, when arrival is TRACE

    @classmethod
    def of_trace(cls, offsets: list[float]) -> ArrivalSchedule:
        """A trace's schedule: its own send times (seconds after the first), and their mean rate."""
        span = offsets[-1] - offsets[0]
        rate = (len(offsets) - 1) / span if span > 0 else float(len(offsets))
        return cls(rate=rate, arrival=TRACE, offsets=tuple(offsets))

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError("the request rate must be positive")
        if self.arrival == TRACE:
            if not self.offsets:
                raise ValueError("a trace schedule needs its send times")
        elif self.arrival not in ARRIVALS:
            raise ValueError(f"unknown arrival process {self.arrival!r}")
        if self.burstiness <= 0:
            raise ValueError("burstiness must be positive")

    def send_offsets(self, count: int) -> list[float]:
        """Seconds after the schedule's start at which each of ``count`` requests is due (the same for a seed)."""
        if self.offsets is not None:
            return list(self.offsets[:count])
        if self.arrival == "constant":
            return [i / self.rate for i in range(count)]
        rng = random.Random(self.seed)
        scale = 1.0 / (self.rate * self.burstiness)
        offsets, due = [], 0.0
        for _ in range(count):
            offsets.append(due)
            due += rng.gammavariate(self.burstiness, scale)
        return offsets
