"""A sweep's document (every level's run plus a summary row per level, and its knee) and its table.

A level is a concurrency, or in a rate sweep a request rate at one concurrency cap.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any, cast

from tokenbench import __version__
from tokenbench.aggregator.formatting import figure
from tokenbench.aggregator.headline import FIGURES, MEAN_CONCURRENCY, THROUGHPUTS
from tokenbench.aggregator.schema import AutoRates, Knee, LevelFigures, Report, SweepDocument
from tokenbench.aggregator.verdict import error_rate, requests_due

if TYPE_CHECKING:
    from tokenbench.runner.auto_sweep import AutoSweep

# The knee: the first level whose TTFT p99 is more than this many times the first level's.
KNEE_FACTOR = 2.0


def level_summary(report: Report) -> LevelFigures:
    """One level's headline figures, taken from its run's report."""
    rate = error_rate(report)
    return cast(LevelFigures, {
        "concurrency": report["concurrency"],
        "request_rate": report["request_rate"],  # None: the closed loop
        "run_id": report["run_id"],
        "requests": requests_due(report),
        "successful_runs": report["successful_runs"],
        "error_rate": None if rate is None else round(rate, 4),
        **{throughput.key: report[throughput.key] for throughput in (*THROUGHPUTS, MEAN_CONCURRENCY)},
        **{headline.level_key: report[headline.latency.key][headline.percentile] for headline in FIGURES},
    })


def sweep_document(concurrency_levels: list[int], request_rates: list[float | None] | None, max_error_rate: float,
                   reports: list[Report], stopped_early: str | None,
                   config: dict[str, Any] | None = None, auto: AutoSweep | None = None) -> SweepDocument:
    """The sweep's JSON: what was asked (concurrency levels, or the rates of a rate sweep), what ran, a
    summary row per level, the knee, and every level's full report. ``auto``: the levels of
    `sweep --auto`, already in order of load (runner/auto_sweep.py)."""
    levels = [level_summary(report) for report in reports]
    return {
        "sweep": {
            "concurrency_levels": concurrency_levels,
            # A rate sweep's levels, at concurrency_levels[0] at most in flight (None: a closed-loop level).
            "request_rates": request_rates,
            # --auto: how its rates were found (its closed-loop levels ran first, then the rates).
            "auto": None if auto is None else AutoRates(
                rates=auto.rates, concurrency=auto.concurrency,
                synchronous_rps=levels[0]["request_throughput_per_s"] if levels else None,
                saturation_rps=levels[-1]["request_throughput_per_s"] if len(levels) > 1 else None,
                run_order="concurrency 1, concurrency N, then the rates from low to high",
            ),
            # Each run's level: its concurrency, or in a rate sweep its request rate (None: the closed loop).
            "completed_levels": [report["request_rate"] if request_rates else report["concurrency"]
                                 for report in reports],
            "max_error_rate": max_error_rate,
            "stopped_early": stopped_early,
            "knee": knee(levels),
            "tokenbench_version": __version__,
            "config": config,
        },
        "levels": levels,
        "runs": reports,
    }


def knee(levels: list[LevelFigures]) -> Knee | None:
    """Where latency turns: the first level whose TTFT p99 exceeds KNEE_FACTOR times the first level's."""
    base = levels[0]["ttft_p99_ms"] if levels else None
    if not base:
        return None
    for number, level in enumerate(levels):
        p99 = level["ttft_p99_ms"]
        if p99 is not None and p99 > KNEE_FACTOR * base:
            return {"level": number, "concurrency": level["concurrency"], "request_rate": level["request_rate"],
                    "ttft_p99_ms": p99, "times_first_level": round(p99 / base, 2),
                    "rule": f"the first level whose TTFT p99 is over {KNEE_FACTOR:g}x the first level's"}
    return None


def level_name(level: LevelFigures | Knee) -> str:
    """``c=16``, or a rate sweep's ``4 req/s``."""
    rate = level["request_rate"]
    return f"{rate:g} req/s" if rate else f"c={level['concurrency']}"


# (heading, key, decimals): 8 columns of 9 fit 80 columns
_COLUMNS = tuple((throughput.name.removeprefix("output "), throughput.key, throughput.decimals)
                 for throughput in THROUGHPUTS) + tuple((headline.label, headline.level_key, headline.latency.decimals)
                                                        for headline in FIGURES if headline.in_sweep_table)


def format_sweep(document: SweepDocument) -> str:
    """Throughput and latency per level (ms unless marked), at most 80 columns wide."""
    by_rate = bool(document["sweep"].get("request_rates"))
    if by_rate:
        cap = document["sweep"]["concurrency_levels"][0]
        title = f"sweep: throughput and latency per request rate, <= {cap} in flight (ms)"
    else:
        title = "sweep: throughput and latency per concurrency level (latencies in ms)"
    lines = [title, f"  {'rate/s' if by_rate else 'workers':>7}{'in flight':>10}"
             + "".join(f"{head:>9}" for head, _, _ in _COLUMNS) + f"{'errors':>7}"]
    for level in document["levels"]:
        row = cast(dict[str, float | None], level)
        cells = "".join(f"{figure(row[key], digits):>9}" for _, key, digits in _COLUMNS)
        errors = "-" if level["error_rate"] is None else f"{100 * level['error_rate']:.1f}%"
        first = str(level["concurrency"]) if not by_rate else \
            f"{level['request_rate']:g}" if level["request_rate"] else f"c={level['concurrency']}"
        lines.append(f"  {first:>7}{figure(level['mean_concurrency'], 1):>10}{cells}{errors:>7}")
    turn = document["sweep"].get("knee")
    if turn:
        lines.append(f"  knee: TTFT p99 turns at {level_name(turn)}: {figure(turn['ttft_p99_ms'], 1)} ms, "
                     f"{turn['times_first_level']:g}x the first level's")
    if document["sweep"]["stopped_early"]:
        lines += textwrap.wrap(document["sweep"]["stopped_early"], 80, initial_indent="  stopped early: ",
                               subsequent_indent="    ")
    return "\n".join(lines)


