"""A concurrency sweep's document (every level's run plus a summary row per level) and its table."""

from __future__ import annotations

import textwrap
from typing import Any

from tokenbench import __version__
from tokenbench.aggregator.verdict import error_rate


def level_summary(report: dict[str, Any]) -> dict[str, Any]:
    """One level's headline figures, taken from its run's report."""
    rate = error_rate(report)
    return {
        "concurrency": report["concurrency"],
        "run_id": report["run_id"],
        "requests": report["num_prompts"],
        "successful_runs": report["successful_runs"],
        "error_rate": None if rate is None else round(rate, 4),
        "request_throughput_per_s": report["request_throughput_per_s"],
        "output_throughput_tokens_per_s": report["output_throughput_tokens_per_s"],
        "mean_concurrency": report["mean_concurrency"],
        "ttft_p50_ms": report["ttft_ms"]["p50"],
        "ttft_p99_ms": report["ttft_ms"]["p99"],
        "itl_p50_ms": report["itl_ms"]["p50"],
        "itl_p99_ms": report["itl_ms"]["p99"],
        "tpot_p50_ms": report["tpot_ms"]["p50"],
        "e2e_latency_p50_ms": report["e2e_latency_ms"]["p50"],
        "e2e_latency_p99_ms": report["e2e_latency_ms"]["p99"],
    }


def sweep_document(levels: list[int], max_error_rate: float, reports: list[dict[str, Any]],
                   stopped_early: str | None, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The sweep's JSON: what was asked, what ran, a summary row per level, and every level's full report."""
    return {
        "sweep": {
            "concurrency_levels": levels,
            "completed_levels": [report["concurrency"] for report in reports],
            "max_error_rate": max_error_rate,
            "stopped_early": stopped_early,
            "tokenbench_version": __version__,
            "config": config,
        },
        "levels": [level_summary(report) for report in reports],
        "runs": reports,
    }


def is_sweep(document: dict[str, Any]) -> bool:
    return isinstance(document.get("sweep"), dict) and isinstance(document.get("runs"), list)


_COLUMNS = (  # (heading, key, decimals): 8 columns of 9 fit 80 columns
    ("req/s", "request_throughput_per_s", 2),
    ("tok/s", "output_throughput_tokens_per_s", 0),
    ("TTFT p50", "ttft_p50_ms", 1),
    ("TTFT p99", "ttft_p99_ms", 1),
    ("ITL p50", "itl_p50_ms", 2),
    ("E2EL p50", "e2e_latency_p50_ms", 0),
)


def format_sweep(document: dict[str, Any]) -> str:
    """Throughput and latency per level (ms unless marked), at most 80 columns wide."""
    lines = ["sweep: throughput and latency per concurrency level (latencies in ms)",
             f"  {'workers':>7}{'in flight':>10}" + "".join(f"{head:>9}" for head, _, _ in _COLUMNS) + f"{'errors':>7}"]
    for level in document["levels"]:
        cells = "".join(f"{_number(level[key], digits):>9}" for _, key, digits in _COLUMNS)
        errors = "-" if level["error_rate"] is None else f"{100 * level['error_rate']:.1f}%"
        lines.append(f"  {level['concurrency']:>7}{_number(level['mean_concurrency'], 1):>10}{cells}{errors:>7}")
    if document["sweep"]["stopped_early"]:
        lines += textwrap.wrap(document["sweep"]["stopped_early"], 80, initial_indent="  stopped early: ",
                               subsequent_indent="    ")
    return "\n".join(lines)


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"
