"""Comparing result files: headline metrics side by side, and whether each difference is real.

Each verdict comes from a bootstrap: the requests of both runs are resampled (with replacement,
``RESAMPLES`` times, seeded so the verdict is reproducible) and the statistic (median or p99 of a
per-request value) is recomputed; the 95% interval of the difference (other - baseline) decides.
An interval that holds 0 is "within noise", and so is one whose end nearest 0 is within
``MIN_EFFECT`` of the baseline (a difference that may be too small to act on). Otherwise lower
latency (or higher tokens/s) is "faster". Requests are the unit: the tokens of one request are not
independent samples.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from tokenbench.aggregator.headline import FIGURES, THROUGHPUTS
from tokenbench.aggregator.schema import ComparisonRow, Report, ResultEntry
from tokenbench.aggregator.stats import percentile

RESAMPLES = 1000
CONFIDENCE = 0.95
SEED = 20261127
MIN_EFFECT = 0.01  # differences below 1% of the baseline are not called


@dataclass(frozen=True)
class Metric:
    """A statistic of a per-request value, compared by resampling the requests."""

    label: str
    per_request: Callable[[ResultEntry], float | None]  # from a results[] entry
    percentile: int  # the statistic: this percentile of the requests' values
    higher_is_better: bool = False


# The headline latencies (aggregator/headline.py), then the per-request throughput.
METRICS = (*(Metric(f"{f.label} (ms)", f.latency.per_request, int(f.percentile[1:])) for f in FIGURES),
           Metric("tok/s p50", lambda entry: entry["tokens_per_second"], 50, higher_is_better=True))


def _statistic(values: list[float], q: int) -> float:
    return percentile(sorted(values), q)


def samples(report: Report, metric: Metric) -> list[float]:
    values = (metric.per_request(entry) for entry in report["results"] if entry["success"])
    return [v for v in values if v is not None]


def bootstrap_interval(baseline: list[float], other: list[float], statistic: int,
                       rng: random.Random) -> tuple[float, float]:
    """The CONFIDENCE interval of statistic(other) - statistic(baseline) over bootstrap resamples."""
    differences = sorted(
        _statistic(rng.choices(other, k=len(other)), statistic)
        - _statistic(rng.choices(baseline, k=len(baseline)), statistic)
        for _ in range(RESAMPLES)
    )
    tail = (1 - CONFIDENCE) / 2 * 100
    return percentile(differences, tail), percentile(differences, 100 - tail)


def verdict(interval: tuple[float, float], baseline: float, higher_is_better: bool) -> str:
    low, high = interval
    # Called only when the whole interval lies beyond the smallest effect worth acting on.
    if low <= 0 <= high or min(abs(low), abs(high)) < MIN_EFFECT * abs(baseline):
        return "within noise"
    better = low > 0 if higher_is_better else high < 0
    return "faster" if better else "slower"


def worse_by_at_least_pct(interval: tuple[float, float], baseline: float, higher_is_better: bool) -> float:
    """How much worse than the baseline, in percent, the other run is at the least (the interval's
    end nearest "no change"); 0 when the interval allows no change or better."""
    low, high = interval
    worse = -high if higher_is_better else low
    return round(max(worse, 0.0) / abs(baseline) * 100, 2) if baseline else 0.0


def compare(baseline: Report, other: Report) -> list[ComparisonRow]:
    """One row per metric: both values, their ratio, the interval of the difference, the verdict,
    and by how much the other run is worse at the least."""
    rng = random.Random(SEED)
    rows = []
    for metric in METRICS:
        a, b = samples(baseline, metric), samples(other, metric)
        value_a = _statistic(a, metric.percentile) if a else None
        value_b = _statistic(b, metric.percentile) if b else None
        row = ComparisonRow(metric=metric.label, baseline=None if value_a is None else round(value_a, 3),
                            other=None if value_b is None else round(value_b, 3), ratio=None, difference_ci=None,
                            verdict="no data", worse_by_at_least_pct=None)
        if value_a is not None and value_b is not None:
            interval = bootstrap_interval(a, b, metric.percentile, rng)
            row["ratio"] = round(value_b / value_a, 3) if value_a else None
            row["difference_ci"] = [round(interval[0], 3), round(interval[1], 3)]
            row["verdict"] = verdict(interval, value_a, metric.higher_is_better)
            row["worse_by_at_least_pct"] = worse_by_at_least_pct(interval, value_a, metric.higher_is_better)
        rows.append(row)
    for throughput in THROUGHPUTS:  # one figure per run: a ratio, but no test
        first, second = baseline[throughput.key], other[throughput.key]
        rows.append(ComparisonRow(metric=throughput.name, baseline=first, other=second,
                                  ratio=round(second / first, 3) if first and second else None, difference_ci=None,
                                  verdict="one value per run: no test", worse_by_at_least_pct=None))
    return rows


# What makes two runs the same experiment: a comparison across any of these compares workloads too.
WorkloadField = Literal["mode", "model", "num_prompts", "max_tokens", "concurrency", "request_rate", "arrival",
                        "burstiness", "duration_limit_s", "ramp_up_s", "measure_after_s", "workload"]
WORKLOAD_FIELDS: tuple[WorkloadField, ...] = get_args(WorkloadField)


def comparison_warnings(baseline: Report, other: Report) -> list[str]:
    """Why the two runs may not be comparable: a different workload, or a run that did not finish."""
    warnings = [f"the runs differ in {field}: {_shown(baseline[field])} vs {_shown(other[field])}"
                for field in WORKLOAD_FIELDS if baseline[field] != other[field]]
    for name, result in (("the baseline", baseline), ("the other run", other)):
        if not result["complete"]:
            why = result["interrupted_reason"] or ("interrupted" if result["interrupted"] else "incomplete")
            warnings.append(f"{name} is incomplete: {result['missing_runs']} of {result['num_prompts']} "
                            f"requests have no record ({why})")
        if result["num_prompts"] and not result["successful_runs"]:
            warnings.append(f"{name} has no successful request")
    return warnings


def regressions(rows: list[ComparisonRow], threshold_pct: float) -> list[ComparisonRow]:
    """The rows whose other run is worse than the baseline beyond noise by more than ``threshold_pct``."""
    return [row for row in rows if (row["worse_by_at_least_pct"] or 0) > threshold_pct]


def _shown(value: Any) -> str:
    return "-" if value is None else str(value)


def format_comparison(baseline_name: str, other_name: str, rows: list[ComparisonRow]) -> str:
    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:,.1f}"

    lines = [f"{other_name} vs {baseline_name} (95% bootstrap interval of the difference, {RESAMPLES} resamples)",
             f"  {'metric':<16}{'baseline':>10}{'other':>10}{'ratio':>7}  verdict"]
    for row in rows:
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}"
        interval = ""
        if row["difference_ci"]:
            low, high = row["difference_ci"]
            interval = f" [{low:+.1f}, {high:+.1f}]"
        lines.append(f"  {row['metric']:<16}{number(row['baseline']):>10}{number(row['other']):>10}{ratio:>7}  "
                     f"{row['verdict']}{interval}")
    return "\n".join(lines)
