"""The result document's shape: what `report` writes (aggregator/report.py builds it), what `run`
adds, and what the table, the HTML page, the CSV, sweep and compare read. docs/metrics.md defines
every figure; this says its type. A result file read back is checked against it
(``result_problem``) before anything reads it.
"""

# No `from __future__ import annotations` here: TypedDict then sees NotRequired only as a string
# (Python 3.11) and makes every key required.
from typing import Any, NotRequired, TypedDict

from tokenbench.shared.conformance import problem_with
from tokenbench.shared.records import RequestRecord, from_known_fields, record_problem


class Distribution(TypedDict):
    """A figure over the requests (or samples): all None when there were none."""

    mean: float | None
    std: float | None  # population standard deviation
    min: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    max: float | None


class LoopLag(TypedDict):
    """How late the workers' event loops ran (aggregator/loop_lag.py)."""

    p50: float | None
    p90: float | None
    p99: float | None
    max: float
    samples: int
    p99_by_worker: dict[str, float | None]


class CpuWait(TypedDict):
    """How long the workers' loop threads waited for a CPU while runnable (aggregator/loop_lag.py)."""

    share: float | None  # of the time they had requests in flight
    mean_wait_ms: float | None  # per turn on a CPU
    wait_ms: float
    share_by_worker: dict[str, float | None]


class ErrorCount(TypedDict):
    count: int
    example: str | None  # one message of this type


class CategoryFigures(TypedDict):
    requests: int
    successful: int
    success_rate: float | None
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    tokens_per_second: float | None


class TurnFigures(TypedDict):
    turn: int
    requests: int
    successful: int
    ttft_ms: Distribution
    mean_input_tokens: float | None
    mean_cached_tokens: float | None
    cached_token_share: float | None
    mean_output_tokens: float | None


class MissingRequest(TypedDict):
    index: int
    prompt_id: str


class ServerDistribution(TypedDict):
    """A server histogram's change over the run, in ms (percentiles estimated from its buckets)."""

    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    percentiles: NotRequired[str]


class ServerMetrics(TypedDict):
    """The server's own `/metrics` over the run (aggregator/server_metrics.py)."""

    url: str
    server: str | None
    scrapes: int
    failed_scrapes: int
    series: dict[str, list[float | None]]
    counters: dict[str, float]
    histograms: dict[str, ServerDistribution]
    raw_change: dict[str, float]


class ServerDecomposition(TypedDict):
    """The client's TTFT and latency beside the server's, and what is left: network and client."""

    client_ttft_mean_ms: float | None
    server_ttft_mean_ms: float | None
    server_queue_time_mean_ms: float | None
    server_prefill_time_mean_ms: float | None
    network_and_client_ms: float | None
    client_e2e_mean_ms: float | None
    server_e2e_mean_ms: float | None
    client_output_tokens: int
    server_generation_tokens: float | None
    server_requests: int | None


class ServerCpuWait(TypedDict):
    """`run`, with the server on this host: how long its processes' threads waited for a CPU."""

    pids: list[int]
    commands: list[str]  # their command names (/proc/PID/comm)
    wait_s: float
    wait_ms_per_s: float | None  # wait_s per second of the run, in ms


class LocalCpu(TypedDict):
    """`run`: how busy this machine's CPUs were during the run, and the server's wait for one."""

    cores: int
    busy_share: float | None
    server_cpu_wait: NotRequired[ServerCpuWait | None]  # None: no server found on this host


# One request: every field of its record (but run_id and its text) and the metrics derived from it
# (report.result_entry); its fields are checked as the record's are (``_result_entry_problem``).
ResultEntry = dict[str, Any]


class Report(TypedDict):
    """One run's result document, in the order it is written (the seed harness's keys first)."""

    mode: str
    concurrency: int
    num_prompts: int
    successful_runs: int
    avg_latency_ms: float | None
    avg_tokens_per_second: float | None
    p50_latency_ms: float | None
    p95_latency_ms: float | None
    run_id: str
    model: str
    base_url: str
    max_tokens: int
    started_at: str
    duration_s: float
    complete: bool
    cancelled: bool
    interrupted: bool
    interrupted_reason: str | None
    run_started_at: float | None
    duration_limit_s: float | None
    not_sent: int
    ended_after_duration: int | None
    ramp_up_s: float | None
    measure_after_s: float | None
    excluded_requests: int
    request_rate: float | None
    arrival: str | None
    burstiness: float | None
    seed: int | None
    dispatch_lag_ms: Distribution | None
    schedule_kept: bool | None
    mean_concurrency: float | None
    max_concurrency: int
    worker_idle_gap_ms: Distribution
    event_loop_lag_ms: LoopLag | None
    worker_cpu_wait: NotRequired[CpuWait | None]  # (results before it have none)
    failed_runs: int
    missing_runs: int
    missing: list[MissingRequest]
    total_input_tokens: int
    total_cached_tokens: int | None
    cached_token_share: float | None
    total_output_tokens: int
    output_tokens_source: dict[str, int]
    estimated_figures: list[str]
    output_throughput_tokens_per_s: float | None
    request_throughput_per_s: float | None
    slo_ms: dict[str, float] | None
    good_requests: int | None
    slo_attainment: float | None
    goodput_requests_per_s: float | None
    total_reasoning_tokens: int
    total_answer_tokens: int
    reasoning_tokens_source: dict[str, int]
    mean_tokens_per_chunk: float | None
    itl_source: dict[str, int]
    total_cost: float | None
    providers: dict[str, int]
    ttft_ms: Distribution
    ttfat_ms: Distribution
    itl_ms: Distribution
    inter_chunk_ms: Distribution
    tpot_ms: Distribution
    harness_lag_ms: Distribution | None
    e2e_latency_ms: Distribution
    rate_limited_runs: int
    retried_runs: int
    errors: dict[str, ErrorCount]
    server_metrics: ServerMetrics | None
    server_decomposition: ServerDecomposition | None
    categories: dict[str, CategoryFigures]
    turns: list[TurnFigures] | None
    workers: list[str]
    hosts: list[str]
    tokenbench_version: str
    config: dict[str, Any] | None
    workload: dict[str, Any] | None
    worker_environment: dict[str, dict[str, Any]]
    python_versions: dict[str, int]
    results: list[ResultEntry]
    warmup_requests: int
    warmup_results: list[ResultEntry]
    excluded_results: list[ResultEntry]
    local_cpu: NotRequired[LocalCpu]


class ComparisonRow(TypedDict):
    """`compare`: one metric of two runs, and whether they differ beyond noise."""

    metric: str
    baseline: float | None
    other: float | None
    ratio: float | None  # other / baseline
    difference_ci: list[float] | None  # the 95% bootstrap interval of other - baseline
    verdict: str
    worse_by_at_least_pct: float | None


def result_problem(document: Any) -> str | None:
    """Why ``document`` is not a result document this version can read (the first thing wrong,
    with where), or None."""
    problem = problem_with(document, Report)
    if problem is not None:
        return problem
    for key in ("results", "warmup_results", "excluded_results"):
        for number, entry in enumerate(document[key]):
            if (problem := _result_entry_problem(entry)) is not None:
                return f"{key}[{number}]: {problem}"
    return None


_DERIVED_FIGURES = ("tpot_ms", "tokens_per_second")


def _result_entry_problem(entry: dict[str, Any]) -> str | None:
    try:
        record = from_known_fields(RequestRecord, {**entry, "run_id": ""})
    except TypeError as exc:  # a field every record has is missing
        return str(exc).partition("() ")[2] or str(exc)
    return record_problem(record) or next(
        (problem for key in _DERIVED_FIGURES if (problem := problem_with(entry.get(key), float | None, key))), None)


class LevelFigures(TypedDict):
    """A sweep level's headline figures, from its run's report (the latency keys are headline.FIGURES')."""

    concurrency: int
    request_rate: float | None  # None: the closed loop
    run_id: str
    requests: int
    successful_runs: int
    error_rate: float | None
    request_throughput_per_s: float | None
    output_throughput_tokens_per_s: float | None
    mean_concurrency: float | None
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    itl_p50_ms: float | None
    itl_p99_ms: float | None
    tpot_p50_ms: float | None
    e2e_latency_p50_ms: float | None
    e2e_latency_p99_ms: float | None


class Knee(TypedDict):
    level: int
    concurrency: int
    request_rate: float | None
    ttft_p99_ms: float
    times_first_level: float
    rule: str


class AutoRates(TypedDict):
    """`sweep --auto`: how its rates were found."""

    rates: int  # how many rate levels between the two closed-loop ones
    concurrency: int
    synchronous_rps: float | None
    saturation_rps: float | None
    run_order: str


class SweepInfo(TypedDict):
    concurrency_levels: list[int]
    request_rates: list[float | None] | None  # a rate sweep's levels (None: a closed-loop level)
    auto: AutoRates | None
    completed_levels: list[float | None]  # each run's concurrency, or in a rate sweep its rate
    max_error_rate: float
    stopped_early: str | None
    knee: Knee | None
    tokenbench_version: str
    config: dict[str, Any] | None


class SweepDocument(TypedDict):
    """A sweep's result document: what was asked, a summary row per level, and every level's report."""

    sweep: SweepInfo
    levels: list[LevelFigures]
    runs: list[Report]


def sweep_problem(document: Any) -> str | None:
    """As ``result_problem``, for a sweep's document and every run in it."""
    problem = problem_with(document, SweepDocument)
    if problem is not None:
        return problem
    return next((f"runs[{number}]: {problem}" for number, run in enumerate(document["runs"])
                 if (problem := result_problem(run)) is not None), None)
