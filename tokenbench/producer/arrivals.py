"""Open-loop load: when each request of a run is due, as vLLM's ``bench serve`` schedules them.

Requests arrive at ``rate`` per second on average. ``poisson`` draws the gaps from a gamma
distribution of shape ``burstiness`` (1: exponential gaps, a Poisson process; below 1: burstier;
above 1: more even), ``constant`` spaces them exactly 1/rate apart. The first request is due at 0.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

ARRIVALS = ("poisson", "constant")


@dataclass(frozen=True)
class ArrivalSchedule:
    rate: float  # requests per second
    arrival: str = "poisson"
    burstiness: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError("the request rate must be positive")
        if self.arrival not in ARRIVALS:
            raise ValueError(f"unknown arrival process {self.arrival!r}")
        if self.burstiness <= 0:
            raise ValueError("burstiness must be positive")

    def send_offsets(self, count: int) -> list[float]:
        """Seconds after the schedule's start at which each of ``count`` requests is due (the same for a seed)."""
        if self.arrival == "constant":
            return [i / self.rate for i in range(count)]
        rng = random.Random(self.seed)
        scale = 1.0 / (self.rate * self.burstiness)
        offsets, due = [], 0.0
        for _ in range(count):
            offsets.append(due)
            due += rng.gammavariate(self.burstiness, scale)
        return offsets
