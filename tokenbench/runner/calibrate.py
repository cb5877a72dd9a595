"""`tokenbench calibrate`: what this machine's harness adds to each measurement.

The built-in mock streams with exact timing and stamps every chunk with its send time
(shared/calibration.py). At each concurrency level, real tokenbench workers measure it through
Redis and RQ exactly as in a benchmark; then a bare asyncio aiohttp client (the least a client
can do, runner/bare_client.py) measures the same server at the same concurrency. Both report the
receive lag per chunk (receive minus stamped send) and the TTFT error (measured minus the mock's
configured TTFT).
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any, TextIO

from tokenbench.aggregator.schema import Distribution, Report
from tokenbench.aggregator.stats import summarize
from tokenbench.mock import PLACEHOLDER_BASE_URL
from tokenbench.producer.prompts import BUILTIN_PROMPTS, select_prompts
from tokenbench.runner.bare_client import bare_requests
from tokenbench.runner.cpu import CpuSampler
from tokenbench.runner.local_run import MockOptions, RunOptions, Services, run_once
from tokenbench.shared.endpoint import resolve_endpoint


@dataclass(frozen=True)
class CalibrationSettings:
    levels: tuple[int, ...] = (1, 16, 64)
    requests_per_worker: int = 4
    tokens: int = 128
    ttft_ms: float = 50.0
    itl_ms: float = 10.0


@dataclass
class ClientFigures:
    """One client's measurements at one level: lag per chunk and TTFT error, as distributions (ms)."""

    lag_ms: Distribution
    ttft_error_ms: Distribution
    chunks: int
    chunk_rate: float  # chunks/s received over the level's duration
    cpu_busy: float | None  # share of the machine's CPU time spent busy meanwhile


def calibrate(settings: CalibrationSettings, progress_stream: TextIO = sys.stderr) -> list[dict[str, Any]]:
    """For each level: tokenbench's figures and the bare client's, side by side."""
    endpoint = resolve_endpoint("mock", max_tokens=settings.tokens, placeholder_base_url=PLACEHOLDER_BASE_URL)
    mock = MockOptions(settings.ttft_ms, settings.itl_ms, output_tokens=settings.tokens,
                       extra_args=("--stamp-send-time",))
    # One unmeasured request per worker (and per bare-client connection) first: both then measure
    # warm connections, as a benchmark with --warmup does.
    options = RunOptions(endpoint=endpoint, prompts=[], concurrency=1, mock=mock, warmup=1)
    levels = []
    with ExitStack() as started:
        services = Services(started, options)
        for level in settings.levels:
            count = level * settings.requests_per_worker
            progress_stream.write(f"calibrate: concurrency {level}, {count} requests through tokenbench workers\n")
            level_options = replace(options, prompts=select_prompts(count, BUILTIN_PROMPTS), concurrency=level)
            sampler = CpuSampler()
            report = run_once(services, level_options, level, progress_stream).report
            harness = _harness_figures(report, settings, sampler.busy_share())
            progress_stream.write(f"calibrate: concurrency {level}, {count} requests from a bare aiohttp client\n")
            url = services.endpoint().request_url
            bare = bare_client(url, level, settings.requests_per_worker, settings)
            levels.append({"concurrency": level, "tokenbench": harness.__dict__, "bare_client": bare.__dict__,
                           "mean_concurrency": report["mean_concurrency"],
                           "worker_idle_gap_ms": report["worker_idle_gap_ms"]})
    return levels


def _harness_figures(report: Report, settings: CalibrationSettings, cpu_busy: float | None) -> ClientFigures:
    ok = [r for r in report["results"] if r["success"]]
    chunks = sum(len(r["chunk_offsets_ms"]) for r in ok)
    return ClientFigures(
        lag_ms=report["harness_lag_ms"] or summarize([]),
        ttft_error_ms=summarize(r["ttft_ms"] - settings.ttft_ms for r in ok),
        chunks=chunks,
        chunk_rate=round(chunks / report["duration_s"], 1) if report["duration_s"] else 0.0,
        cpu_busy=cpu_busy,
    )


def bare_client(url: str, concurrency: int, requests_each: int, settings: CalibrationSettings) -> ClientFigures:
    """The bare aiohttp client's figures at ``concurrency`` (runner/bare_client.py)."""
    sampler = CpuSampler()
    started = time.perf_counter()
    requests = asyncio.run(bare_requests(url, concurrency, requests_each, settings.tokens))
    elapsed = time.perf_counter() - started
    lags = [(received - sent) / 1e6 for r in requests for received, sent in zip(r.token_received_ns, r.token_sent_ns)]
    ttft_errors = [(r.token_received_ns[0] - r.sent_ns) / 1e6 - settings.ttft_ms for r in requests
                   if r.token_received_ns]
    return ClientFigures(lag_ms=summarize(lags), ttft_error_ms=summarize(ttft_errors), chunks=len(lags),
                         chunk_rate=round(len(lags) / elapsed, 1), cpu_busy=sampler.busy_share())


def format_calibration(levels: list[dict[str, Any]], settings: CalibrationSettings) -> str:
    """The error budget, at most 80 columns: lag per chunk and TTFT error, tokenbench against a bare client."""
    lines = [
        f"calibration: mock TTFT {settings.ttft_ms:g} ms, ITL {settings.itl_ms:g} ms, {settings.tokens} tokens, "
        f"{settings.requests_per_worker} requests per worker",
        "",
        "                  lag per chunk (ms)                TTFT error (ms)",
        "  conc. chunks/s    p50    p99 bare p50 bare p99    p50    p99 bare p50   CPU",
    ]
    for level in levels:
        ours, bare = level["tokenbench"], level["bare_client"]
        cpu = "-" if ours["cpu_busy"] is None else f"{100 * ours['cpu_busy']:.0f}%"
        lines.append(f"  {level['concurrency']:>5}{ours['chunk_rate']:>9,.0f}{_ms(ours['lag_ms']['p50'])}"
                     f"{_ms(ours['lag_ms']['p99'])}{_ms(bare['lag_ms']['p50'], 9)}{_ms(bare['lag_ms']['p99'], 9)}"
                     f"{_ms(ours['ttft_error_ms']['p50'])}{_ms(ours['ttft_error_ms']['p99'])}"
                     f"{_ms(bare['ttft_error_ms']['p50'], 9)}{cpu:>6}")
    worst = levels[-1]
    ours, bare = worst["tokenbench"], worst["bare_client"]
    budget = (f"At concurrency {worst['concurrency']} this machine adds p99 {ms_text(ours['lag_ms']['p99'])} ms to "
              f"each chunk (a bare aiohttp client: {ms_text(bare['lag_ms']['p99'])} ms), and TTFT reads p50 "
              f"{ms_text(ours['ttft_error_ms']['p50'])} ms above the server's (bare client: "
              f"{ms_text(bare['ttft_error_ms']['p50'])} ms).")
    return "\n".join(lines + [""] + textwrap.wrap(budget, 80))


def _ms(value: float | None, width: int = 7) -> str:
    return f"{ms_text(value):>{width}}"


def ms_text(value: float | None) -> str:
    """A millisecond figure with two decimals, or '-' when there is none."""
    return "-" if value is None else f"{value:.2f}"
