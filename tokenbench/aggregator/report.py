"""The run's result document, as a pure function of its records.

Definitions follow vLLM's ``bench serve``; docs/metrics.md states them in full.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Any

from tokenbench.aggregator.concurrency import achieved_concurrency, in_flight_intervals, worker_idle_gaps_ms
from tokenbench.aggregator.goodput import meets_slo
from tokenbench.aggregator.loop_lag import summarize_cpu_wait, summarize_loop_lag
from tokenbench.aggregator.request_metrics import (
    itl_source,
    pooled_inter_chunk_gaps_ms,
    pooled_inter_token_latencies_ms,
    tokens_per_second,
    tpot_ms,
)
from tokenbench.aggregator.schema import (
    CategoryFigures,
    Distribution,
    ErrorCount,
    Report,
    ServerMetrics,
    TurnFigures,
)
from tokenbench.aggregator.server_metrics import decomposition
from tokenbench.aggregator.stats import mean, summarize
from tokenbench.shared.gc_pause import gc_paused
from tokenbench.shared.records import TOKENS_FROM_CHUNKS, ErrorType, RequestRecord, RunMeta

# An open-loop run whose p99 dispatch lag exceeds this did not keep its schedule: its workers were
# too few (or too busy) to send each request when it was due.
LATE_DISPATCH_MS = 50.0
# What rests on the output token count: approximate where a server sent no usage.
TOKEN_COUNT_FIGURES = ("total_output_tokens", "output_throughput_tokens_per_s", "avg_tokens_per_second", "tpot_ms",
                       "mean_tokens_per_chunk")


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# The order of a ``results[]`` entry (a result file is read and diffed by people): the record's own
# fields, and the metrics derived from it where they belong. A record field not named here comes
# after these, so none is ever left out; run_id is the document's, output_text never leaves Redis.
_RESULT_LAYOUT = (
    "index", "prompt_id", "category", "session_id", "turn", "success", "error_type", "error", "http_status",
    "worker", "stream", "host", "attempt", "warmup", "started_at", "clock_offset_ms", "clock_rtt_ms",
    "scheduled_at", "dispatch_lag_ms", "chunk_lag_ms", "headers_ms", "ttft_ms", "ttfat_ms", "latency_ms",
    "elapsed_ms", "tpot_ms", "output_tokens", "output_tokens_source", "reasoning_tokens", "answer_tokens",
    "reasoning_tokens_source", "input_tokens", "cached_tokens", "tokens_per_second", "finish_reason",
    "served_model", "provider", "generation_id", "cost", "retries", "retry_wait_ms", "chunk_offsets_ms",
    "chunk_tokens", "chunk_tokens_source", "itl_source",
)
_DERIVED: dict[str, Callable[[RequestRecord], Any]] = {
    "tpot_ms": lambda record: _round(tpot_ms(record)),
    "tokens_per_second": lambda record: _round(tokens_per_second(record)),
    "itl_source": itl_source,
}
_NOT_IN_RESULTS = frozenset({"run_id", "output_text"})
_RESULT_KEYS = _RESULT_LAYOUT + tuple(f.name for f in fields(RequestRecord)
                                      if f.name not in _RESULT_LAYOUT and f.name not in _NOT_IN_RESULTS)


def result_entry(record: RequestRecord) -> dict[str, Any]:
    """One ``results[]`` entry: every field of the record (but run_id and its text), with its derived metrics."""
    return {key: _DERIVED[key](record) if key in _DERIVED else getattr(record, key) for key in _RESULT_KEYS}


def error_breakdown(records: list[RequestRecord]) -> dict[str, ErrorCount]:
    """Failed requests by error type: count and one example message."""
    breakdown: dict[str, ErrorCount] = {}
    for record in records:
        if not record.success:
            entry = breakdown.setdefault(record.error_type or "unknown", ErrorCount(count=0, example=record.error))
            entry["count"] += 1
    return dict(sorted(breakdown.items(), key=lambda item: -item[1]["count"]))


def category_breakdown(records: list[RequestRecord]) -> dict[str, CategoryFigures]:
    """Per prompt category: requests, success rate, TTFT p50/p95 and mean tokens/s of the successful ones."""
    breakdown = {}
    for category in sorted({r.category for r in records}):
        mine = [r for r in records if r.category == category]
        ok = [r for r in mine if r.success]
        ttft = summarize(r.ttft_ms for r in ok if r.ttft_ms is not None)
        breakdown[category] = CategoryFigures(
            requests=len(mine),
            successful=len(ok),
            success_rate=_round(len(ok) / len(mine), 4),
            ttft_p50_ms=ttft["p50"],
            ttft_p95_ms=ttft["p95"],
            tokens_per_second=_round(mean([t for t in map(tokens_per_second, ok) if t is not None])),
        )
    return breakdown


def turn_breakdown(records: list[RequestRecord]) -> list[TurnFigures] | None:
    """Conversations: per turn number, its requests and their TTFT, input and cached tokens (the
    history grows with each turn; a prefix cache shows as TTFT falling). None without conversations."""
    turns = sorted({r.turn for r in records if r.turn is not None})
    if not turns:
        return None
    breakdown = []
    for turn in turns:
        mine = [r for r in records if r.turn == turn]
        ok = [r for r in mine if r.success]
        breakdown.append(TurnFigures(
            turn=turn,
            requests=len(mine),
            successful=len(ok),
            ttft_ms=summarize(r.ttft_ms for r in ok if r.ttft_ms is not None),
            mean_input_tokens=_round(mean([r.input_tokens for r in ok if r.input_tokens is not None]), 1),
            mean_cached_tokens=_round(mean([r.cached_tokens for r in ok if r.cached_tokens is not None]), 1),
            cached_token_share=_round(_cached_share(ok), 4),
            mean_output_tokens=_round(mean([r.output_tokens for r in ok]), 1),
        ))
    return breakdown


@dataclass(frozen=True)
class MeasuredRequests:
    """What a report's figures cover: the records sent from ``--measure-after`` on, in job order."""

    records: list[RequestRecord]
    excluded: list[RequestRecord]  # sent before --measure-after
    missing: list[int]  # jobs without a record (none in a --duration run: those were not sent)
    not_sent: int  # --duration: jobs of the cap never sent
    run_start: float | None  # the run's start (else its first send), which the time bounds count from
    measure_after_s: float | None


def measured_requests(meta: RunMeta, records: list[RequestRecord], missing: list[int], run_started_at: float | None,
                      measure_after_s: float | None) -> MeasuredRequests:
    """The records sorted and split by --measure-after (the report's, else the run's own), and the
    jobs without a record as missing or, in a --duration run, as not sent."""
    records = sorted(records, key=lambda r: r.index)
    sent = [r.started_at for r in records if r.elapsed_ms is not None]
    run_start = run_started_at if run_started_at is not None else min(sent, default=None)
    after = meta.measure_after_s if measure_after_s is None else measure_after_s
    excluded: list[RequestRecord] = []
    if after and run_start is not None:
        measured_from = run_start + after
        excluded = [r for r in records if r.elapsed_ms is not None and r.started_at < measured_from]
        records = [r for r in records if not (r.elapsed_ms is not None and r.started_at < measured_from)]
    if meta.duration_s is not None:
        return MeasuredRequests(records, excluded, [], len(missing), run_start, after or None)
    return MeasuredRequests(records, excluded, missing, 0, run_start, after or None)


def itl_summaries(ok: list[RequestRecord]) -> tuple[Distribution, Distribution]:
    """(ITL, inter-chunk gaps) over the successful requests. Without per-chunk token counts the ITL
    samples are the inter-chunk gaps: summarised once, not twice."""
    inter_chunk = summarize(pooled_inter_chunk_gaps_ms(ok))
    if all(r.chunk_tokens is None for r in ok):
        return inter_chunk, inter_chunk
    return summarize(pooled_inter_token_latencies_ms(ok)), inter_chunk


@gc_paused()
def build_report(
    meta: RunMeta,
    records: list[RequestRecord],
    missing: list[int] | None = None,
    *,
    cancelled: bool = False,
    interrupted: bool = False,
    interrupted_reason: str | None = None,
    slo: dict[str, float] | None = None,
    warmup_records: list[RequestRecord] | None = None,
    worker_environment: dict[str, dict[str, Any]] | None = None,
    loop_lag: dict[str, dict[str, Any]] | None = None,
    server_metrics: ServerMetrics | None = None,
    run_started_at: float | None = None,
    measure_after_s: float | None = None,
) -> Report:
    """The result document: the seed's keys first, then the rest. ``missing``: job indices without a record;
    ``worker_environment``: worker -> where and on what it ran (record_store.read_workers); ``loop_lag``:
    worker -> its event loop's lag histogram (record_store.read_loop_lag); ``server_metrics``: the
    server's `/metrics` over the run (server_metrics.summarize); ``run_started_at``: the start a
    --duration counts from (collect.run_start); ``measure_after_s`` (default: the run's own): requests
    sent earlier than this after the start are kept apart, out of every figure."""
    measured = measured_requests(meta, records, missing or [], run_started_at, measure_after_s)
    records, missing, run_start = measured.records, measured.missing, measured.run_start
    ok = [r for r in records if r.success]
    latencies = [r.latency_ms for r in ok if r.latency_ms is not None]
    per_request_rates = [rate for rate in map(tokens_per_second, ok) if rate is not None]
    e2e = summarize(latencies)

    intervals = in_flight_intervals(records)
    start = min((begin for begin, _ in intervals), default=None)
    end = max((finish for _, finish in intervals), default=None)
    duration_s = (end - start) if start is not None and end is not None else 0.0
    total_output = sum(r.output_tokens for r in ok)
    workers = sorted({r.worker for r in records})
    good = sum(meets_slo(r, slo) for r in records) if slo else None
    total_chunks = sum(len(r.chunk_offsets_ms) for r in ok)
    costs = [r.cost for r in records if r.cost is not None]
    mean_concurrency, max_concurrency = achieved_concurrency(intervals)
    lags = summarize(r.dispatch_lag_ms for r in records if r.dispatch_lag_ms is not None)
    dispatch_p99 = lags["p99"]
    lagged = [r for r in ok if r.chunk_lag_ms]
    itl_summary, inter_chunk_summary = itl_summaries(ok)
    ttft = summarize(r.ttft_ms for r in ok if r.ttft_ms is not None)

    return Report({
        "mode": meta.mode,
        "concurrency": meta.requested_concurrency or len({(r.worker, r.stream) for r in records}),
        "num_prompts": meta.num_prompts,
        "successful_runs": len(ok),
        "avg_latency_ms": _round(mean(latencies)),
        "avg_tokens_per_second": _round(mean(per_request_rates)),
        "p50_latency_ms": e2e["p50"],
        "p95_latency_ms": e2e["p95"],
        "run_id": meta.run_id,
        "model": meta.model,
        "base_url": meta.base_url,
        "max_tokens": meta.max_tokens,
        "started_at": _iso(start if start is not None else meta.created_at),
        "duration_s": round(duration_s, 3),
        "complete": not missing,
        "cancelled": cancelled,  # by `tokenbench cancel`
        "interrupted": interrupted,  # `tokenbench run` stopped by Ctrl-C / SIGTERM, or its embedded Redis died
        "interrupted_reason": interrupted_reason,
        # The start a schedule, a ramp-up or a --duration counts from (epoch seconds, Redis clock); None without one.
        "run_started_at": run_started_at,
        "duration_limit_s": meta.duration_s,  # --duration: the run ended this long after its start
        "not_sent": measured.not_sent,  # --duration: requests of the cap not sent before the end
        # --duration: requests in flight at the end ran to their finish and count; this many ended after it.
        "ended_after_duration": _ended_after(records, run_start, meta.duration_s),
        "ramp_up_s": meta.ramp_up_s,
        "measure_after_s": measured.measure_after_s,  # requests sent before it are in excluded_results
        "excluded_requests": len(measured.excluded),
        "request_rate": meta.request_rate,  # open loop (--request-rate); None: closed loop
        "arrival": meta.arrival,
        "burstiness": meta.burstiness,
        "seed": meta.seed,
        "dispatch_lag_ms": lags if meta.request_rate else None,  # actual first send minus scheduled
        "schedule_kept": (dispatch_p99 is None or dispatch_p99 <= LATE_DISPATCH_MS) if meta.request_rate else None,
        "mean_concurrency": _round(mean_concurrency),  # time-weighted requests in flight
        "max_concurrency": max_concurrency,
        # Closed loop: a worker's idle time between one request's end and its next send (the harness's share).
        "worker_idle_gap_ms": summarize(worker_idle_gaps_ms(records)),
        # How late the workers' event loops ran while they served the run: chunk times may be that late.
        "event_loop_lag_ms": summarize_loop_lag(loop_lag or {}),
        # How long those loops, ready to run, waited for a CPU (a program on the same cores takes them).
        "worker_cpu_wait": summarize_cpu_wait(loop_lag or {}),
        "failed_runs": len(records) - len(ok),
        "missing_runs": len(missing),
        "missing": [{"index": i, "prompt_id": meta.prompt_ids[i]} for i in missing],
        "total_input_tokens": sum(r.input_tokens or 0 for r in ok),
        # Prompt-cache reads, where the server says (None: no request said): and their share of the input.
        "total_cached_tokens": _sum_known(r.cached_tokens for r in ok),
        "cached_token_share": _round(_cached_share(ok), 4),
        "total_output_tokens": total_output,
        "output_tokens_source": dict(Counter(r.output_tokens_source for r in ok)),
        # A server that sends no usage (llama.cpp): its tokens are counted as chunks, a few short of the truth.
        "estimated_figures": list(TOKEN_COUNT_FIGURES) if any(r.output_tokens_source == TOKENS_FROM_CHUNKS
                                                              for r in ok) else [],
        "output_throughput_tokens_per_s": _round(total_output / duration_s if duration_s > 0 else None),
        "request_throughput_per_s": _round(len(ok) / duration_s if duration_s > 0 else None),
        "slo_ms": slo or None,  # --slo: the objectives goodput counts against
        "good_requests": good,
        "slo_attainment": _round(good / len(records) if good is not None and records else None, 4),
        "goodput_requests_per_s": _round(good / duration_s if good is not None and duration_s > 0 else None),
        "total_reasoning_tokens": sum(r.reasoning_tokens for r in ok),
        "total_answer_tokens": sum(r.answer_tokens for r in ok),
        "reasoning_tokens_source": dict(Counter(r.reasoning_tokens_source for r in ok if r.reasoning_tokens_source)),
        "mean_tokens_per_chunk": _round(total_output / total_chunks if total_chunks else None),
        "itl_source": dict(Counter(itl_source(r) for r in ok)),
        "total_cost": _round(sum(costs), 8) if costs else None,
        "providers": dict(Counter(r.provider for r in ok if r.provider)),
        "ttft_ms": ttft,
        "ttfat_ms": summarize(r.ttfat_ms for r in ok if r.ttfat_ms is not None),
        "itl_ms": itl_summary,
        "inter_chunk_ms": inter_chunk_summary,
        "tpot_ms": summarize(t for t in map(tpot_ms, ok) if t is not None),
        # Only against a mock that stamps its send times (calibrate): what the harness adds to each chunk.
        "harness_lag_ms": summarize(lag for r in lagged for lag in r.chunk_lag_ms or ()) if lagged else None,
        "e2e_latency_ms": e2e,
        "rate_limited_runs": sum(r.error_type == ErrorType.RATE_LIMITED for r in records),
        "retried_runs": sum(bool(r.retries) for r in records),
        "errors": error_breakdown(records),
        # The server's own /metrics over the run (aggregator/server_metrics.py), and the client's figures beside it.
        "server_metrics": server_metrics,
        "server_decomposition": decomposition(ttft["mean"], e2e["mean"], total_output, server_metrics),
        "categories": category_breakdown(records),
        "turns": turn_breakdown(records),  # conversations (--turns, --conversations): figures by turn number
        "workers": workers,
        "hosts": sorted({r.host for r in records}),
        "tokenbench_version": meta.tokenbench_version,
        "config": meta.config,  # every option as resolved (--config file, then flags), without secrets
        "workload": meta.workload,
        "worker_environment": dict(sorted((worker_environment or {}).items())),
        "python_versions": dict(Counter(python for env in (worker_environment or {}).values()
                                        if isinstance(python := env.get("python"), str))),
        "results": [result_entry(r) for r in records],
        "warmup_requests": len(warmup_records or []),  # sent before measuring, left out of every figure
        "warmup_results": [result_entry(r) for r in warmup_records or []],
        "excluded_results": [result_entry(r) for r in measured.excluded],  # sent before --measure-after
    })


def _ended_after(records: list[RequestRecord], start: float | None, duration_s: float | None) -> int | None:
    if duration_s is None or start is None:
        return None
    return sum(r.started_at + (r.elapsed_ms or 0) / 1000 > start + duration_s for r in records
               if r.elapsed_ms is not None)


def _sum_known(values: Iterable[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _cached_share(ok: list[RequestRecord]) -> float | None:
    """Cached input tokens / input tokens, over the requests whose server gave both."""
    both = [(r.cached_tokens, r.input_tokens) for r in ok if r.cached_tokens is not None and r.input_tokens]
    total_input = sum(i for _, i in both)
    return sum(c for c, _ in both) / total_input if total_input else None


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=timezone.utc).isoformat(timespec="milliseconds")
