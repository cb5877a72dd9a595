"""How late a worker's event loop runs, per run: the measure of a harness that falls behind.

Every stream of a worker process shares one event loop, and a chunk's time is taken when the loop
gets to its read. A loop that is late by L ms makes every chunk time it takes meanwhile late by up
to L ms, so the lag is sampled all through a run and stored beside its records, where the report
shows it and warns when it is large.

Beside each sample it reads how long the loop's thread has waited for a CPU while runnable (Linux's
schedstat): the lag of a loop that is ready but not given a core, which a CPU-hungry program on the
same cores (a server on the same machine) causes and a 10 ms sampling tick sees only in part.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass

import orjson

SAMPLE_INTERVAL_S = 0.01
BIN_MS = 0.1  # histogram resolution
SCHEDSTAT = "/proc/thread-self/schedstat"  # ns on a CPU, ns runnable but waiting for one, turns on a CPU


@dataclass
class CpuWaitTally:
    """What the loop's thread waited for a CPU over a run's time in flight (schedstat deltas)."""

    wait_ns: int = 0
    turns: int = 0  # times the thread was given a CPU
    in_flight_ns: int = 0  # time sampled while this process had a request of the run in flight

    def to_dict(self) -> dict[str, float | int]:
        return {"wait_ms": round(self.wait_ns / 1e6, 3), "turns": self.turns,
                "in_flight_ms": round(self.in_flight_ns / 1e6, 3)}


class LoopLagMonitor:
    """Samples the loop's lag every ``SAMPLE_INTERVAL_S`` into a histogram per run in progress."""

    def __init__(self) -> None:
        self._jobs_in_flight: Counter[str] = Counter()  # run id -> this process's requests of it
        self._counts: dict[str, Counter[int]] = {}
        self._max_ms: dict[str, float] = {}
        self._cpu_wait: dict[str, CpuWaitTally] = {}
        self._unsaved: set[str] = set()  # runs with samples not yet handed out by ``unsaved``

    def job_started(self, run_id: str) -> None:
        self._jobs_in_flight[run_id] += 1

    def job_ended(self, run_id: str) -> None:
        self._jobs_in_flight[run_id] -= 1
        if self._jobs_in_flight[run_id] <= 0:
            del self._jobs_in_flight[run_id]

    async def run(self) -> None:
        """Sample until cancelled; run on the loop's own thread (its schedstat is the one read)."""
        loop = asyncio.get_running_loop()
        schedstat = open_schedstat()
        try:
            last, last_ns = read_schedstat(schedstat), time.monotonic_ns()
            while True:
                due = loop.time() + SAMPLE_INTERVAL_S
                await asyncio.sleep(SAMPLE_INTERVAL_S)
                self.add_sample(max((loop.time() - due) * 1000, 0.0))
                now, now_ns = read_schedstat(schedstat), time.monotonic_ns()
                if now is not None and last is not None:
                    self.add_cpu_wait(now[0] - last[0], now[1] - last[1], now_ns - last_ns)
                last, last_ns = now, now_ns
        finally:
            if schedstat is not None:
                os.close(schedstat)

    def add_sample(self, lag_ms: float) -> None:
        for run_id in self._jobs_in_flight:
            self._counts.setdefault(run_id, Counter())[int(lag_ms / BIN_MS)] += 1
            self._max_ms[run_id] = max(self._max_ms.get(run_id, 0.0), lag_ms)
            self._unsaved.add(run_id)

    def add_cpu_wait(self, wait_ns: int, turns: int, elapsed_ns: int) -> None:
        """Count one interval's CPU wait to every run in flight (as the lag samples)."""
        for run_id in self._jobs_in_flight:
            wait = self._cpu_wait.setdefault(run_id, CpuWaitTally())
            wait.wait_ns += wait_ns
            wait.turns += turns
            wait.in_flight_ns += elapsed_ns

    def unsaved(self) -> dict[str, bytes]:
        """The histogram (JSON) of each run that has new samples since the last call; a run whose
        jobs have all ended is forgotten once handed out."""
        histograms = {run_id: histogram_json(self._counts[run_id], self._max_ms[run_id], self._cpu_wait.get(run_id))
                      for run_id in self._unsaved}
        for run_id in self._unsaved - set(self._jobs_in_flight):
            del self._counts[run_id], self._max_ms[run_id]
            self._cpu_wait.pop(run_id, None)
        self._unsaved.clear()
        return histograms


def histogram_json(counts: Counter[int], max_ms: float, cpu_wait: CpuWaitTally | None = None) -> bytes:
    histogram: dict[str, object] = {"bin_ms": BIN_MS, "max_ms": round(max_ms, 3),
                                    "counts": {str(k): v for k, v in counts.items()}}
    if cpu_wait is not None:
        histogram["cpu_wait"] = cpu_wait.to_dict()
    return orjson.dumps(histogram)


def open_schedstat() -> int | None:
    """The calling thread's schedstat, kept open (re-read with pread); None where the kernel has none."""
    try:
        return os.open(SCHEDSTAT, os.O_RDONLY)
    except OSError:
        return None


def read_schedstat(fd: int | None) -> tuple[int, int] | None:
    """(ns the thread has waited for a CPU while runnable, its turns on a CPU) so far, or None
    without a schedstat."""
    if fd is None:
        return None
    try:
        _on_cpu, waiting, turns = os.pread(fd, 128, 0).split()[:3]
        return int(waiting), int(turns)
    except (OSError, ValueError):  # a kernel whose schedstat reads otherwise: no figure, not a stopped monitor
        return None
