"""The workers' event-loop lag over a run (see worker/loop_lag.py): how late chunk times may be."""

from __future__ import annotations

from collections import Counter
from typing import Any, TypeGuard

from tokenbench.aggregator.schema import CpuWait, LoopLag
from tokenbench.shared.conformance import is_finite_number

# Above this p99 the workers' loops were late enough to move the figures: the report warns.
LOOP_LAG_WARN_MS = 5.0
# Above this mean wait for a CPU each time a loop was given one, chunk times were late by as much on
# average: the report warns. Measured on 2 cores: 0.03 ms at 8 streams of the mock, 0.06-0.08 ms at
# 128-512 (CPUs 15-45% busy); beside a vLLM spinning on both cores 0.16-15 ms (docs/performance.md).
CPU_WAIT_WARN_MS = 0.25


def summarize_loop_lag(histograms: dict[str, Any]) -> LoopLag | None:
    """p50/p90/p99 and max of every worker's samples together (each sample counted at its bin's upper
    edge), the samples' number, and each worker's p99; None when no worker sampled the run. A
    histogram that is not one (the hash is written by whoever can write to the Redis) counts for none."""
    merged: Counter[int] = Counter()
    per_worker: dict[str, float | None] = {}
    bin_ms: float | None = None  # every worker's bins are one width (merged, they must be)
    max_ms = 0.0
    for worker, histogram in sorted(histograms.items()):
        read = _histogram_of(histogram)
        if read is None or (bin_ms is not None and read[1] != bin_ms):
            continue
        counts, bin_ms, worker_max_ms = read
        per_worker[worker] = _percentile(counts, 99, bin_ms)
        merged.update(counts)
        max_ms = max(max_ms, worker_max_ms)
    if not merged or bin_ms is None:
        return None
    return LoopLag(
        p50=_percentile(merged, 50, bin_ms),
        p90=_percentile(merged, 90, bin_ms),
        p99=_percentile(merged, 99, bin_ms),
        max=max_ms,
        samples=sum(merged.values()),
        p99_by_worker=per_worker,
    )


def _histogram_of(histogram: Any) -> tuple[Counter[int], float, float] | None:
    """(counts by bin, bin width, max) of one worker's stored histogram (worker/loop_lag.py); None
    unless its width is a positive number and its bins, counts and max non-negative ones."""
    if not isinstance(histogram, dict):
        return None
    bin_ms, counts, max_ms = histogram.get("bin_ms"), histogram.get("counts"), histogram.get("max_ms")
    if not is_finite_number(bin_ms) or bin_ms <= 0:
        return None
    if not isinstance(counts, dict) or not _is_non_negative_number(max_ms):
        return None
    read: Counter[int] = Counter()
    for key, count in counts.items():
        if not (isinstance(key, str) and key.isdigit() and len(key) < 10 and isinstance(count, int)
                and not isinstance(count, bool) and 0 <= count < 2**53):
            return None
        read[int(key)] += count
    return read, float(bin_ms), float(max_ms)


def _percentile(counts: Counter[int], q: float, bin_ms: float) -> float | None:
    total = sum(counts.values())
    if not total:
        return None
    rank = q / 100 * total
    seen = 0
    for bin_index in sorted(counts):
        seen += counts[bin_index]
        if seen >= rank:
            return round((bin_index + 1) * bin_ms, 3)
    return round((max(counts) + 1) * bin_ms, 3)


def summarize_cpu_wait(histograms: dict[str, Any]) -> CpuWait | None:
    """How long the workers' loop threads waited for a CPU while they had requests of the run in
    flight: the share of that time, the mean wait per turn on a CPU, and each worker's share; None
    when no worker measured it (not Linux, or workers that do not)."""
    measured = {worker: wait for worker, histogram in sorted(histograms.items())
                if (wait := _cpu_wait_of(histogram)) is not None}
    if not measured:
        return None
    wait_ms = sum(wait_ms for wait_ms, _, _ in measured.values())
    turns = sum(turns for _, turns, _ in measured.values())
    in_flight_ms = sum(in_flight for _, _, in_flight in measured.values())
    return CpuWait(
        share=round(wait_ms / in_flight_ms, 4) if in_flight_ms else None,
        mean_wait_ms=round(wait_ms / turns, 3) if turns else None,
        wait_ms=round(wait_ms, 1),
        share_by_worker={worker: round(w / f, 4) if f else None for worker, (w, _, f) in measured.items()},
    )


def _cpu_wait_of(histogram: dict[str, Any]) -> tuple[float, int, float] | None:
    """(wait ms, turns, in-flight ms) of one worker's stored figures; None if absent or not numbers
    (the hash is written by whoever can write to the Redis)."""
    cpu = histogram.get("cpu_wait") if isinstance(histogram, dict) else None
    if not isinstance(cpu, dict):
        return None
    figures: list[float] = [value for key in ("wait_ms", "turns", "in_flight_ms")
                            if _is_non_negative_number(value := cpu.get(key))]
    if len(figures) != 3:
        return None
    wait_ms, turns, in_flight_ms = figures
    return wait_ms, int(turns), in_flight_ms


def _is_non_negative_number(value: Any) -> TypeGuard[int | float]:
    return is_finite_number(value) and value >= 0
