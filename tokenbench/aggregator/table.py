"""The human-readable summary of a result document, at most 80 columns wide."""

from __future__ import annotations

import textwrap
from typing import Literal

from tokenbench.aggregator.concurrency import SHORTFALL_SHARE
from tokenbench.aggregator.formatting import figure
from tokenbench.aggregator.headline import LATENCIES
from tokenbench.aggregator.loop_lag import CPU_WAIT_WARN_MS, LOOP_LAG_WARN_MS
from tokenbench.aggregator.report import LATE_DISPATCH_MS
from tokenbench.aggregator.schema import Report
from tokenbench.aggregator.verdict import requests_due
from tokenbench.shared.terminal import terminal_safe

# A run whose machine's CPUs were busier than this (all cores together) says so.
SATURATED_SHARE = 0.9
# A server on this host whose threads waited this long for a CPU per second of the run (summed)
# lost a twentieth of a core to what shares it (the workers): its latencies are late by part of it.
SERVER_CPU_WAIT_WARN_MS_PER_S = 50.0

_COLUMNS: tuple[Literal["mean", "p50", "p90", "p95", "p99", "max"], ...] = ("mean", "p50", "p90", "p95", "p99", "max")


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"



def _shortfall_lines(report: Report) -> list[str]:
    achieved, workers = report["mean_concurrency"], report["concurrency"]
    if report.get("request_rate"):  # open loop: the schedule, not the workers, sets what is in flight
        return _schedule_lines(report)
    if achieved is None or not workers or achieved >= SHORTFALL_SHARE * workers or not report["successful_runs"]:
        return []  # (with no success, the errors below say what held the requests up)
    # A multi-turn workload's summary; a ShareGPT sample's "conversations" is the file's count of them.
    conversations = (report.get("workload") or {}).get("conversations")
    thinks = isinstance(conversations, dict) and bool(conversations.get("turn_delay_s"))
    if thinks or (report.get("ramp_up_s") or 0) > (report.get("measure_after_s") or 0):
        return []  # think time between turns, or a ramp-up still in the figures, lowers it by design
    return [f"  warning      only {achieved:.1f} of {workers} requests were in flight on average:",
            "               the workers, not the server, may be the limit"]


def _loop_lag_lines(report: Report) -> list[str]:
    lag = report.get("event_loop_lag_ms")
    if not lag or lag["p99"] is None or lag["p99"] <= LOOP_LAG_WARN_MS:
        return []
    return [f"  warning      the workers' event loops ran late by up to {figure(lag['p99'])} ms (p99): chunk",
            "               times may be that late (add worker processes or hosts)"]


def _cpu_wait_lines(report: Report) -> list[str]:
    wait = report.get("worker_cpu_wait")
    if not wait or wait["mean_wait_ms"] is None or wait["mean_wait_ms"] <= CPU_WAIT_WARN_MS:
        return []
    share = f"{100 * wait['share']:.0f}% of the time" if wait["share"] is not None else "at times"
    return [f"  warning      the workers' loops waited {share} for a CPU",
            f"               while ready to run ({figure(wait['mean_wait_ms'])} ms a turn on average): chunk",
            "               times are late by as much. A program on the same cores takes",
            "               them (keep it off the workers' cores, or use another host)"]


def _cpu_lines(report: Report) -> list[str]:
    cpu = report.get("local_cpu")
    busy = cpu["busy_share"] if cpu is not None else None
    if busy is None or busy < SATURATED_SHARE:
        return []
    return [f"  warning      this machine's CPUs were {100 * busy:.0f}% busy during the run: the",
            "               workers may have timed their own delay (use fewer, or more hosts)"]


def _server_cpu_lines(report: Report) -> list[str]:
    cpu = report.get("local_cpu")
    wait = cpu.get("server_cpu_wait") if cpu is not None else None
    if not wait or wait["wait_ms_per_s"] is None or wait["wait_ms_per_s"] <= SERVER_CPU_WAIT_WARN_MS_PER_S:
        return []
    return [f"  warning      the server on this host waited {wait['wait_s']:.1f} s for a CPU during the run",
            f"               ({figure(wait['wait_ms_per_s'])} ms a second, its threads summed): it shares the cores",
            "               with the workers, and its latencies include that wait (leave it",
            "               cores of its own: --processes, or another host for the workers)",
            f"               watched: {terminal_safe(', '.join(wait['commands']))[:60]}"]


def _schedule_lines(report: Report) -> list[str]:
    lag = report["dispatch_lag_ms"]
    if lag is None:
        return []
    shape = f", burstiness {report['burstiness']:g}" if report["arrival"] == "poisson" else ""
    lines = [f"  schedule     {report['request_rate']:g} req/s, {report['arrival']} arrivals{shape}; "
             f"sent late by p50 {figure(lag['p50'])} ms, p99 {figure(lag['p99'])} ms"]
    if lag["p99"] is not None and lag["p99"] > LATE_DISPATCH_MS:
        lines.append(f"  warning      requests went out up to {figure(lag['max'])} ms after their scheduled time: "
                     "too few workers to keep the schedule (raise --concurrency)")
    return lines


def _workload_lines(report: Report) -> list[str]:
    workload = report.get("workload") or {}
    if "prompt_tokens" not in workload:
        return []
    exactness = "counted" if workload["tokenizer"] != "estimate" else "estimated"
    return [f"  prompts      {workload['source']}: {workload['prompt_tokens']['mean']:,.1f} tokens on average "
            f"({exactness}), seed {workload['seed']}"]


def _goodput_lines(report: Report) -> list[str]:
    slo, attainment = report["slo_ms"], report["slo_attainment"]
    if not slo:
        return []
    objectives = ", ".join(f"{name} <= {limit:g} ms" for name, limit in slo.items())
    return [
        f"  goodput      {figure(report['goodput_requests_per_s'], 2)} req/s meeting {objectives}",
        f"               ({report['good_requests']} requests, "
        f"{figure(None if attainment is None else 100 * attainment)} %)",
    ]


def _estimate_lines(report: Report) -> list[str]:
    if not report.get("estimated_figures"):
        return []
    chunks = report["output_tokens_source"].get("chunks", 0)
    return [f"  estimated    {chunks} request(s) without usage: tokens counted as chunks, so the",
            "               tokens, tok/s and TPOT are approximate (low if a chunk has more)"]


def _server_lines(report: Report) -> list[str]:
    """The server's own TTFT beside the client's: what the server spent (queue, prefill) and what
    is left for the network and the client."""
    server, parts = report.get("server_metrics"), report.get("server_decomposition")
    if not server or not parts:
        return []
    failed = f", {server['failed_scrapes']} failed" if server["failed_scrapes"] else ""
    lines = ["", f"  server       {server['url']} ({server['server']}): {server['scrapes']} scrapes{failed}"]
    if parts["server_ttft_mean_ms"] is not None:
        queue, prefill = figure(parts["server_queue_time_mean_ms"]), figure(parts["server_prefill_time_mean_ms"])
        lines.append(f"               TTFT mean {figure(parts['server_ttft_mean_ms'])} ms (queue {queue}, prefill "
                     f"{prefill}); client {figure(parts['client_ttft_mean_ms'])}")
        lines.append(f"               client - server: {figure(parts['network_and_client_ms'])} ms of network and "
                     "client")
    if parts["server_generation_tokens"] is not None:
        lines.append(f"               tokens generated {parts['server_generation_tokens']:,.0f} "
                     f"(client counted {parts['client_output_tokens']:,}), requests {parts['server_requests']}")
    return lines


def _time_bound_lines(report: Report) -> list[str]:
    """--duration, --ramp-up, --measure-after: what the run's time bounds left out or let run over."""
    parts = []
    if report.get("duration_limit_s") is not None:
        parts.append(f"--duration {report['duration_limit_s']:g} s: {report['not_sent']:,} of the "
                     f"{report['num_prompts']:,} prompts not sent, {report['ended_after_duration'] or 0} request(s) "
                     "ended after it")
    if report.get("ramp_up_s"):
        parts.append(f"--ramp-up {report['ramp_up_s']:g} s")
    if report.get("measure_after_s"):
        parts.append(f"--measure-after {report['measure_after_s']:g} s: {report['excluded_requests']} request(s) "
                     "sent before it left out")
    return [f"  time         {part}" for part in parts]


def _turn_lines(report: Report) -> list[str]:
    """Conversations: TTFT and the (growing, partly cached) input by turn number."""
    turns = report["turns"]
    if not turns:
        return []
    lines = ["", f"  {'turn':<6}{'ok/all':>9}{'TTFT p50':>10}{'TTFT p99':>10}{'input tok':>11}{'cached':>9}  (ms)"]
    for entry in turns:
        ratio = f"{entry['successful']}/{entry['requests']}"
        share = entry["cached_token_share"]
        cached = "-" if share is None else f"{100 * share:.0f} %"
        lines.append(f"  {entry['turn']:<6}{ratio:>9}{figure(entry['ttft_ms']['p50']):>10}"
                     f"{figure(entry['ttft_ms']['p99']):>10}{figure(entry['mean_input_tokens']):>11}{cached:>9}")
    return lines


def _error_lines(report: Report) -> list[str]:
    """Each kind of failure, its count, and its example whole (wrapped, three lines at most)."""
    if not report["errors"]:
        return []
    lines = ["", "  errors"]
    for error_type, entry in report["errors"].items():
        lines.append(f"    {error_type:<20}{entry['count']:>6}")
        lines += textwrap.wrap(entry["example"] or "", width=78, initial_indent="      ", subsequent_indent="      ",
                               max_lines=3, placeholder=" ...")
    return lines


def format_summary(report: Report) -> str:
    lines = [
        f"tokenbench run {report['run_id']}  ({report['mode']}, {report['model']})",
        f"  requests     {report['successful_runs']} ok, {report['failed_runs']} failed, "
        f"{report['missing_runs']} missing of {requests_due(report)}"
        + (f" (+{report['warmup_requests']} warm-up, not counted)" if report.get("warmup_requests") else ""),
        *_time_bound_lines(report),
        f"  concurrency  {report['concurrency']} ({_plural(len(report['workers']), 'process', 'processes')}, "
        f"{_plural(len(report['hosts']), 'host', 'hosts')}); in flight: mean {figure(report['mean_concurrency'])}, "
        f"max {report['max_concurrency']}",
        *_shortfall_lines(report),
        *_loop_lag_lines(report),
        *_cpu_wait_lines(report),
        *_cpu_lines(report),
        *_server_cpu_lines(report),
        *_workload_lines(report),
        f"  duration     {figure(report['duration_s'], 2)} s",
        f"  output       {report['total_output_tokens']:,} tokens, "
        f"{figure(report['output_throughput_tokens_per_s'])} tok/s overall, "
        f"{figure(report['avg_tokens_per_second'])} tok/s per request",
        *_estimate_lines(report),
        f"  requests/s   {figure(report['request_throughput_per_s'], 2)}",
        *_goodput_lines(report),
        "",
        f"  {'(ms)':<12}" + "".join(f"{c:>10}" for c in _COLUMNS),
    ]
    for latency in LATENCIES:
        dist = report[latency.key]
        lines.append(f"  {latency.name:<12}" + "".join(f"{figure(dist[c]):>10}" for c in _COLUMNS))
    lines += _server_lines(report)
    if len(report["categories"]) > 1:
        lines += ["", f"  {'category':<22}{'ok/all':>9}{'TTFT p50':>10}{'TTFT p95':>10}{'tok/s':>9}  (ms)"]
        for name, entry in report["categories"].items():
            ratio = f"{entry['successful']}/{entry['requests']}"
            lines.append(f"  {name[:22]:<22}{ratio:>9}{figure(entry['ttft_p50_ms']):>10}"
                         f"{figure(entry['ttft_p95_ms']):>10}{figure(entry['tokens_per_second']):>9}")
    lines += _turn_lines(report)
    lines += _error_lines(report)
    if report["missing"]:
        shown = ", ".join(f"#{m['index']} {m['prompt_id']}" for m in report["missing"][:5])
        more = f" and {len(report['missing']) - 5} more" if len(report["missing"]) > 5 else ""
        lines.append(f"  missing      {shown}{more}")
    return "\n".join(lines)
