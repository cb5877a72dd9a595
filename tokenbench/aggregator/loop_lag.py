"""The workers' event-loop lag over a run (see worker/loop_lag.py): how late chunk times may be."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tokenbench.aggregator.schema import LoopLag

# Above this p99 the workers' loops were late enough to move the figures: the report warns.
LOOP_LAG_WARN_MS = 5.0


def summarize_loop_lag(histograms: dict[str, dict[str, Any]]) -> LoopLag | None:
    """p50/p90/p99 and max of every worker's samples together (each sample counted at its bin's upper
    edge), the samples' number, and each worker's p99; None when no worker sampled the run."""
    merged: Counter[int] = Counter()
    per_worker: dict[str, float | None] = {}
    bin_ms = 0.0
    for worker, histogram in sorted(histograms.items()):
        counts = Counter({int(k): int(v) for k, v in histogram["counts"].items()})
        bin_ms = float(histogram["bin_ms"])
        per_worker[worker] = _percentile(counts, 99, bin_ms)
        merged.update(counts)
    if not merged:
        return None
    return LoopLag(
        p50=_percentile(merged, 50, bin_ms),
        p90=_percentile(merged, 90, bin_ms),
        p99=_percentile(merged, 99, bin_ms),
        max=max(float(h["max_ms"]) for h in histograms.values()),
        samples=sum(merged.values()),
        p99_by_worker=per_worker,
    )


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
