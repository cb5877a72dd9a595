"""The report's charts, each a pure function of a run's records (parsed once from its result document).

Large runs pool tens of millions of samples, so the series are numpy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import numpy as np

from tokenbench.aggregator.headline import Figure, Latency
from tokenbench.aggregator.html.svg import Chart, color, nice_ticks
from tokenbench.aggregator.request_metrics import concatenated_chunk_offsets, pooled_inter_token_latencies_ms
from tokenbench.aggregator.schema import LevelFigures, Report
from tokenbench.aggregator.stats import percentile
from tokenbench.aggregator.sweep import level_name
from tokenbench.shared.records import RequestRecord, from_known_fields

CDF_POINTS = 400  # points drawn per CDF line, however many samples
CDF_CLIP_PERCENTILE = 99.5  # the x axis ends here, so one outlier does not squeeze the rest into a corner
MAX_TIMELINE_REQUESTS = 4000  # bars drawn in a timeline; a note says when more were left out
TARGET_RATE_BINS = 60

Series = tuple[str, np.ndarray]  # (label, samples)
NamedRecords = tuple[str, list[RequestRecord]]  # (label, one run's records)


def request_records(result: Report) -> list[RequestRecord]:
    """The measured requests of a result document, as records (so the metric definitions are the aggregator's)."""
    return [from_known_fields(RequestRecord, {**entry, "run_id": result["run_id"]}) for entry in result["results"]]


def successful(records: list[RequestRecord]) -> list[RequestRecord]:
    return [r for r in records if r.success]


def cdf_points(values: Sequence[float] | np.ndarray, max_points: int = CDF_POINTS) -> list[tuple[float, float]]:
    """(value, share of samples <= value) in percent, at most ``max_points`` points, evenly spaced in share."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    n = ordered.size
    if n == 0:
        return []
    if n <= max_points:
        return [(float(value), 100 * (i + 1) / n) for i, value in enumerate(ordered)]
    shares = [100 * k / (max_points - 1) for k in range(max_points)]
    return [(float(percentile(ordered, share)), share) for share in shares]


def cdf_chart(title: str, x_label: str, series: list[Series]) -> Chart:
    """Empirical CDFs of several sample sets, overlaid; the x axis is clipped at p99.5 of the widest."""
    ordered = [(label, np.sort(values)) for label, values in series]
    filled = [values for _, values in ordered if values.size]
    clip = max((float(percentile(v, CDF_CLIP_PERCENTILE)) for v in filled), default=1.0)
    largest = max((float(v[-1]) for v in filled), default=1.0)
    low = min((float(v[0]) for v in filled), default=0.0)
    # Start at zero unless every sample sits in the upper half: then zero would squash the curves.
    x_low = 0.0 if low < clip / 2 else nice_ticks(low, clip)[0]
    x_high = nice_ticks(x_low, clip)[-1] if clip > x_low else x_low + 1.0
    note = f"x axis cut at p{CDF_CLIP_PERCENTILE:g}; max {largest:,.1f}" if largest > x_high else ""
    chart = Chart(title, x_label, "share of samples (%)", (min(x_low, low), x_high), (0, 100), note=note)
    for index, (label, values) in enumerate(ordered):
        points = [(min(x, x_high), y) for x, y in cdf_points(values)]
        chart.line(points, color(index), f"{label} (n={values.size:,})")
    return chart


def ttft_series(label: str, records: list[RequestRecord]) -> Series:
    return label, np.array([r.ttft_ms for r in successful(records) if r.ttft_ms is not None], dtype=np.float64)


def itl_series(label: str, records: list[RequestRecord]) -> Series:
    return label, pooled_inter_token_latencies_ms(successful(records))


def e2el_series(label: str, records: list[RequestRecord]) -> Series:
    return label, np.array([r.latency_ms for r in successful(records) if r.latency_ms is not None], dtype=np.float64)


def token_arrivals(records: list[RequestRecord]) -> tuple[np.ndarray, np.ndarray]:
    """(epoch seconds, tokens) of every token-carrying chunk of the successful requests, as two arrays.

    A chunk's tokens are the server's per-chunk counts when known; otherwise the request's
    output_tokens spread evenly over its chunks, so the total matches output_throughput.
    """
    chunked = [r for r in successful(records) if len(r.chunk_offsets_ms)]
    offsets, lengths = concatenated_chunk_offsets(chunked)
    times = np.repeat(np.array([r.started_at for r in chunked], dtype=np.float64), lengths) + offsets / 1000
    tokens = np.repeat(np.array([r.output_tokens / len(r.chunk_offsets_ms) for r in chunked]), lengths)
    for first, record in zip(np.cumsum(lengths) - lengths, chunked):
        if record.chunk_tokens is not None and len(record.chunk_tokens) == len(record.chunk_offsets_ms):
            tokens[first:first + len(record.chunk_tokens)] = record.chunk_tokens
    return times, tokens


def bin_width_s(duration_s: float, bins: int = TARGET_RATE_BINS) -> float:
    """A round bin width (1, 2 or 5 times a power of ten seconds) giving about ``bins`` bins."""
    if duration_s <= 0:
        return 1.0
    raw = duration_s / bins
    power = 10 ** math.floor(math.log10(raw))
    return float(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))


def token_rate(times: np.ndarray, tokens: np.ndarray, start: float, width_s: float) -> list[tuple[float, float]]:
    """Output tokens/s in consecutive windows of ``width_s`` from ``start``: (window middle, rate)."""
    if times.size == 0:
        return []
    windows = np.maximum(((times - start) // width_s).astype(np.int64), 0)
    totals = np.bincount(windows, weights=tokens)
    return [((i + 0.5) * width_s, float(total) / width_s) for i, total in enumerate(totals)]


def token_rate_chart(named_records: list[NamedRecords]) -> Chart:
    """Output tokens/s over time since each run's first request, overlaid."""
    per_run = []
    for label, records in named_records:
        sent = [r.started_at for r in records if r.elapsed_ms is not None]
        per_run.append((label, *token_arrivals(records), min(sent, default=0.0)))
    longest = max((float(times.max()) - start for _, times, _, start in per_run if times.size), default=1.0)
    width = bin_width_s(longest)
    lines = [(label, token_rate(times, tokens, start, width)) for label, times, tokens, start in per_run]
    peak = max((rate for _, points in lines for _, rate in points), default=1.0)
    chart = Chart("Output tokens/s over time", "seconds since the first request",
                  f"tokens/s ({width:g} s windows)", (0, nice_ticks(0, longest)[-1]), (0, nice_ticks(0, peak)[-1]))
    for index, (label, points) in enumerate(lines):
        chart.line(points, color(index), label)
    return chart


SERVER_GAUGES = (("requests_waiting", "waiting (queued)"), ("requests_running", "running"))


def server_gauges_chart(label: str, result: Report, records: list[RequestRecord]) -> Chart | None:
    """The server's queue and running requests over time (its /metrics), on the axis of the tokens/s
    chart (seconds since the run's first request), with KV-cache use as a share of the peak count."""
    server = result["server_metrics"]
    series = server["series"] if server is not None else {}
    answered = [t for t in series.get("answered_at") or [] if t is not None]
    if not answered:
        return None
    start = min((r.started_at for r in records if r.elapsed_ms is not None), default=answered[0])
    lines = [(name, [(t - start, v) for t, v in zip(answered, series[key]) if v is not None])
             for key, name in SERVER_GAUGES if key in series]
    peak = max((v for _, points in lines for _, v in points), default=1.0) or 1.0
    if "kv_cache_usage" in series:
        lines.append((f"KV cache use (x {peak:g} = full)",
                      [(t - start, v * peak) for t, v in zip(answered, series["kv_cache_usage"]) if v is not None]))
    longest = max(answered[-1] - start, 1.0)
    chart = Chart(f"Server: {label}'s queue, requests running and KV cache (its /metrics, when each scrape answered)",
                  "seconds since the first request", "requests", (0, nice_ticks(0, longest)[-1]),
                  (0, nice_ticks(0, peak)[-1]))
    for index, (name, points) in enumerate(lines):
        chart.line(points, color(index), name)
    return chart


def timeline_chart(label: str, records: list[RequestRecord]) -> Chart:
    """One bar per request in its worker's lane: waiting for the first token (light), streaming (dark),
    failed (red)."""
    timed = sorted((r for r in records if r.elapsed_ms is not None), key=lambda r: r.started_at)
    left_out = max(len(timed) - MAX_TIMELINE_REQUESTS, 0)
    timed = timed[:MAX_TIMELINE_REQUESTS]
    workers = sorted({r.worker for r in timed})
    lane = {worker: i for i, worker in enumerate(workers)}
    start = min((r.started_at for r in timed), default=0.0)
    end = max((r.started_at - start + (r.elapsed_ms or 0.0) / 1000 for r in timed), default=1.0)
    label_every = max(1, math.ceil(len(workers) / 24))
    tick_labels = {float(i): _short_worker(w) for i, w in enumerate(workers) if i % label_every == 0}
    note = f"first {MAX_TIMELINE_REQUESTS:,} requests shown, {left_out:,} left out" if left_out else ""
    chart = Chart(f"Requests by worker: {label}", "seconds since the first request", "worker",
                  (0, nice_ticks(0, end)[-1]), (-0.5, max(len(workers), 1) - 0.5), note=note,
                  height=max(340, 90 + 14 * len(workers)), y_tick_labels=tick_labels)
    waiting, streaming, failed = "#9ecae1", color(0), color(3)
    for record in timed:
        begin = record.started_at - start
        finish = begin + (record.elapsed_ms or 0.0) / 1000  # (set: timed holds only those)
        row = lane[record.worker]
        tip = (f"{record.prompt_id} on {record.worker}: TTFT {_ms(record.ttft_ms)}, "
               f"end {_ms(record.elapsed_ms)}" + ("" if record.success else f", {record.error_type}"))
        if not record.success:
            chart.bar(begin, finish, row, 0.7, failed, tip)
        elif record.ttft_ms is None:
            chart.bar(begin, finish, row, 0.7, waiting, tip)
        else:
            first_token = begin + record.ttft_ms / 1000
            chart.bar(begin, first_token, row, 0.7, waiting, tip)
            chart.bar(first_token, finish, row, 0.7, streaming, tip)
    chart.legend_entry("waiting for first token", waiting)
    chart.legend_entry("streaming", streaming)
    chart.legend_entry("failed", failed)
    return chart


def _short_worker(worker: str) -> str:
    return worker if len(worker) <= 9 else "…" + worker[-8:]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


def sweep_curve_chart(levels: list[LevelFigures], latency: Latency) -> Chart:
    """Latency (p50 and p99) against output throughput, one point per level."""
    name = latency.name
    quantiles = [Figure(latency, "p50"), Figure(latency, "p99")]
    points = [[(throughput, value, level_name(level)) for level in levels
               if (throughput := level["output_throughput_tokens_per_s"]) is not None
               and (value := cast(dict[str, float | None], level)[quantile.level_key]) is not None]
              for quantile in quantiles]
    by = "request rate" if any(level["request_rate"] for level in levels) else "concurrency"
    chart = Chart(f"{name} against throughput, by {by}", "output tokens/s (all requests)", f"{name} (ms)",
                  (0, nice_ticks(0, max((x for series in points for x, _, _ in series), default=1.0))[-1]),
                  (0, nice_ticks(0, max((y for series in points for _, y, _ in series), default=1.0))[-1]))
    for index, (quantile, series) in enumerate(zip(quantiles, points)):
        chart.labelled_points(series, color(index), quantile.label, show_names=quantile.percentile == "p50")
    return chart
