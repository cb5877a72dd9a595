"""How late a worker's event loop runs, per run: the measure of a harness that falls behind.

Every stream of a worker process shares one event loop, and a chunk's time is taken when the loop
gets to its read. A loop that is late by L ms makes every chunk time it takes meanwhile late by up
to L ms, so the lag is sampled all through a run and stored beside its records, where the report
shows it and warns when it is large.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import orjson

SAMPLE_INTERVAL_S = 0.01
BIN_MS = 0.1  # histogram resolution


class LoopLagMonitor:
    """Samples the loop's lag every ``SAMPLE_INTERVAL_S`` into a histogram per run in progress."""

    def __init__(self) -> None:
        self._jobs_in_flight: Counter[str] = Counter()  # run id -> this process's requests of it
        self._counts: dict[str, Counter[int]] = {}
        self._max_ms: dict[str, float] = {}
        self._unsaved: set[str] = set()  # runs with samples not yet handed out by ``unsaved``

    def job_started(self, run_id: str) -> None:
        self._jobs_in_flight[run_id] += 1

    def job_ended(self, run_id: str) -> None:
        self._jobs_in_flight[run_id] -= 1
        if self._jobs_in_flight[run_id] <= 0:
            del self._jobs_in_flight[run_id]

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + SAMPLE_INTERVAL_S
            await asyncio.sleep(SAMPLE_INTERVAL_S)
            self.add_sample(max((loop.time() - due) * 1000, 0.0))

    def add_sample(self, lag_ms: float) -> None:
        for run_id in self._jobs_in_flight:
            self._counts.setdefault(run_id, Counter())[int(lag_ms / BIN_MS)] += 1
            self._max_ms[run_id] = max(self._max_ms.get(run_id, 0.0), lag_ms)
            self._unsaved.add(run_id)

    def unsaved(self) -> dict[str, bytes]:
        """The histogram (JSON) of each run that has new samples since the last call; a run whose
        jobs have all ended is forgotten once handed out."""
        histograms = {run_id: histogram_json(self._counts[run_id], self._max_ms[run_id]) for run_id in self._unsaved}
        for run_id in self._unsaved - set(self._jobs_in_flight):
            del self._counts[run_id], self._max_ms[run_id]
        self._unsaved.clear()
        return histograms


def histogram_json(counts: Counter[int], max_ms: float) -> bytes:
    return orjson.dumps({"bin_ms": BIN_MS, "max_ms": round(max_ms, 3),
                         "counts": {str(k): v for k, v in counts.items()}})
