"""The `tokenbench` command line: a thin layer over the producer, worker, aggregator and runner."""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from tokenbench import __version__
from tokenbench.aggregator.export import document_json
from tokenbench.aggregator.verdict import failure_reason
from tokenbench.cli_config import config_option, resolved_config
from tokenbench.cli_options import (
    MAX_TIMEOUT_S,
    MAX_TOKENS,
    FiniteFloatRange,
    base_url_option,
    benchmark_inputs,
    duration_option,
    force_option,
    max_error_rate_option,
    max_tokens_option,
    measure_after_option,
    metrics_source_from_flags,
    mode_option,
    model_option,
    output_option,
    parse_faults,
    parse_levels,
    parse_sse_variants_option,
    prompts_options,
    ramp_up_option,
    redis_url_option,
    request_options,
    schedule_options,
    server_metrics_options,
    slo_option,
    ttl_option,
    warmup_option,
)
from tokenbench.cli_outputs import (
    ResultFiles,
    check_writable,
    load_result,
    load_result_or_sweep,
    result_file_options,
    result_files_from_flags,
    write_result_files,
)
from tokenbench.mock import FAULTS as MOCK_FAULTS
from tokenbench.mock import PLACEHOLDER_BASE_URL
from tokenbench.mock.shapes import ERROR_STYLES, REASONING_STYLES, SSE_VARIANTS, USAGE_STYLES
from tokenbench.shared import keys
from tokenbench.shared.errors import TokenbenchError
from tokenbench.shared.presets import api_key_from_env, require_api_key
from tokenbench.shared.redis_conn import connect, default_redis_url
from tokenbench.shared.terminal import one_line, terminal_safe

if TYPE_CHECKING:
    from tokenbench.aggregator.schema import Report, SweepDocument
    from tokenbench.producer.arrivals import ArrivalSchedule
    from tokenbench.runner.local_run import RunOptions


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tokenbench")
def cli() -> None:
    """Measure how fast LLM endpoints stream tokens: TTFT, ITL, TPOT, latency and throughput."""


@cli.command()
@config_option
@mode_option
@base_url_option
@model_option
@max_tokens_option
@prompts_options
@redis_url_option("default redis://localhost:6379/0")
@click.option("--run-id", help="Run id (default: generated).")
@click.option("--queue", default=keys.DEFAULT_QUEUE, show_default=True, help="RQ queue to put the jobs on.")
@warmup_option
@ttl_option
@request_options
@schedule_options
@duration_option
@measure_after_option
def enqueue(mode, base_url, model, max_tokens, redis_url, run_id, queue, warmup, ttl_s, **flags) -> None:
    """Put one job per prompt on Redis and print the run id (last line of stdout).

    With TOKENBENCH_SECRET in the environment each job is signed, and workers given the same secret
    run only signed jobs."""
    from tokenbench.producer.enqueue import enqueue_run
    from tokenbench.shared.signing import secret_from_env

    if mode == "mock" and not base_url:
        raise click.UsageError("--mode mock with enqueue needs --base-url of a running `tokenbench mock-server`")
    config = resolved_config(click.get_current_context())
    inputs = benchmark_inputs(mode, base_url, model, max_tokens, flags)
    workload = inputs.workload
    connection = connect(redis_url or default_redis_url(), "enqueue")
    meta = enqueue_run(connection, inputs.endpoint, workload.prompts, run_id=run_id, queue_name=queue, warmup=warmup,
                       ttl_s=ttl_s, schedule=inputs.schedule, config=config, workload=workload.description,
                       secret=secret_from_env(), turn_delay_s=workload.turn_delay_s, time_bounds=inputs.time_bounds)
    click.echo(f"enqueued {meta.num_prompts} jobs on queue {meta.queue!r} ({mode}, {inputs.endpoint.model})",
               err=True)
    click.echo(meta.run_id)


@cli.command()
@click.option("-n", "--processes", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="Worker processes to start on this host.")
@click.option("--streams", type=click.IntRange(1, 4096), default=1, show_default=True,
              help="Requests each process keeps in flight at once (its streams).")
@click.option("--concurrency", type=click.IntRange(1, 65536),
              help="Requests in flight on this host in all, spread over the processes (instead of --streams).")
@redis_url_option("default redis://localhost:6379/0")
@click.option("--queue", "queues", multiple=True, help=f"Queue(s) to serve [default: {keys.DEFAULT_QUEUE}].")
@click.option("--burst", is_flag=True, help="Exit when the queues are empty.")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]), default="INFO",
              show_default=True, help="INFO: one line per job with its outcome.")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="HOST",
              help="Send the API key to this host too (repeatable; also TOKENBENCH_ALLOW_HOSTS). Without it the "
                   "key goes only to the presets' hosts and to the hosts of jobs signed with TOKENBENCH_SECRET.")
@force_option
def worker(processes, streams, concurrency, redis_url, queues, burst, log_level, allow_hosts, force) -> None:
    """Start worker processes that run the benchmark's jobs: N processes x K streams requests in flight.

    Each process is an RQ worker that runs up to K jobs at once on one event loop. API keys come
    from this host's environment (TOKENBENCH_API_KEY, else the mode's own variable, e.g.
    OPENROUTER_API_KEY); they never travel through Redis. With TOKENBENCH_SECRET in the environment
    (the same as the producer's), only jobs signed with it run.
    """
    from tokenbench.worker.pool import run_workers, split_streams

    if concurrency is not None and _given_options(("streams",)):
        raise click.UsageError("give --streams (per process) or --concurrency (in all), not both")
    shares = split_streams(concurrency, processes) if concurrency is not None else [streams] * processes
    _check_capacity(sum(shares), len(shares), force)
    status = run_workers(redis_url or default_redis_url(), list(queues) or [keys.DEFAULT_QUEUE], shares,
                         burst=burst, logging_level=log_level, allow_hosts=allow_hosts)
    sys.exit(status)


@cli.command()
@click.argument("run_id")
@redis_url_option("default redis://localhost:6379/0")
@result_file_options
@click.option("--timeout", "timeout_s", type=FiniteFloatRange(min=0, max=MAX_TIMEOUT_S), default=600.0,
              show_default=True,
              help="Seconds to wait for missing records.")
@slo_option
@max_error_rate_option
@server_metrics_options
@measure_after_option
def report(run_id, redis_url, timeout_s, slo, max_error_rate, measure_after, **flags) -> None:
    """Wait for a run's records, print the summary and write the JSON.

    Exits 1 when records are still missing after --timeout, the run was cancelled (the JSON then
    says which requests have no record), or more requests failed than --max-error-rate allows.
    """
    from tokenbench.aggregator.collect import (
        count_records,
        is_cancelled,
        load_meta,
        missing_indices,
        read_records,
        run_start,
        wait_for_records,
    )
    from tokenbench.aggregator.report import build_report
    from tokenbench.runner.metrics_scraper import start_scraper
    from tokenbench.runner.progress import Progress
    from tokenbench.shared.record_store import read_loop_lag, read_warmup_records, read_workers

    files = result_files_from_flags(flags)
    metrics_source = metrics_source_from_flags(flags)
    connection = connect(redis_url or default_redis_url(), "report")
    meta = load_meta(connection, run_id)
    server = None
    if count_records(connection, run_id) < meta.num_prompts:
        # The server's metrics cover what is left of the run: the scraping starts with the wait.
        scraper = start_scraper(metrics_source, meta.mode, meta.base_url, lambda line: click.echo(line, err=True))
        progress = Progress(connection, run_id, meta.num_prompts, sys.stderr, queue=meta.queue,
                            duration_s=meta.duration_s)

        def keep_waiting(_done: int | None) -> bool:
            progress.update()
            return True
        try:
            wait_for_records(connection, meta, timeout_s, keep_waiting)
        finally:
            progress.finish()
            server = scraper.finish() if scraper is not None else None
    records = read_records(connection, meta)
    cancelled = is_cancelled(connection, run_id)
    result = build_report(meta, records, missing_indices(meta, records), cancelled=cancelled, slo=slo,
                          warmup_records=read_warmup_records(connection, run_id),
                          worker_environment=read_workers(connection, run_id),
                          loop_lag=read_loop_lag(connection, run_id), server_metrics=server,
                          run_started_at=run_start(connection, run_id), measure_after_s=measure_after)
    _emit(result, files)
    if cancelled and not result["complete"]:
        raise TokenbenchError(f"run {run_id} was cancelled: {result['missing_runs']} of {meta.num_prompts} "
                              "requests were not run")
    if not result["complete"]:
        raise TokenbenchError(f"{result['missing_runs']} of {meta.num_prompts} records missing after {timeout_s:g} s")
    _exit_on_failures(result, max_error_rate)


@cli.command()
@click.argument("run_id")
@redis_url_option("default redis://localhost:6379/0")
def cancel(run_id, redis_url) -> None:
    """Cancel a run: remove its pending jobs from the queue; requests in flight finish and keep their records."""
    from tokenbench.aggregator.collect import load_meta
    from tokenbench.producer.cancel import cancel_run, started_ahead

    connection = connect(redis_url or default_redis_url(), "cancel")
    meta = load_meta(connection, run_id)
    removed = cancel_run(connection, meta)
    ahead = started_ahead(connection, meta)
    held = f"; workers drop the {ahead} they had started ahead, unsent" if ahead else ""
    click.echo(f"cancelled run {run_id}: removed {removed} pending job(s) from queue {meta.queue!r}{held}")


MOCK_MS_MAX = 3_600_000.0  # an hour: the mock's longest wait
MOCK_MS = FiniteFloatRange(min=0, max=MOCK_MS_MAX)

mock_options = [
    click.option("--mock-ttft-ms", type=MOCK_MS, default=50.0, show_default=True,
                 help="With --mode mock: time to first token."),
    click.option("--mock-itl-ms", type=MOCK_MS, default=10.0, show_default=True,
                 help="With --mode mock: time between tokens."),
    click.option("--mock-fault", callback=parse_faults, metavar="FAULT[,FAULT...]",
                 help="With --mode mock: the fault the mock injects, or a mix taken in turn (see `mock-server "
                      "--help`)."),
    click.option("--mock-fault-rate", type=click.FloatRange(0, 1), default=1.0, show_default=True,
                 help="With --mock-fault: share of requests that get it."),
    click.option("--mock-fault-after", type=click.IntRange(0, MAX_TOKENS), default=1, show_default=True,
                 help="With --mock-fault: tokens sent before it."),
    click.option("--mock-option", "mock_options", multiple=True, metavar="NAME[=VALUE]",
                 help="With --mode mock: any other `mock-server` option, e.g. reasoning=think (repeatable)."),
]


processes_option = click.option(
    "--processes", type=click.IntRange(1, 1024),
    help="Worker processes the concurrency is spread over, each running its share of the streams on one "
         "event loop [default: one per core].")


preflight_option = click.option(
    "--preflight/--no-preflight", default=True, show_default=True,
    help="Send one short unmeasured request first, and stop at once on 401/403/404 or no connection.")


def benchmark_options(command: Any) -> Any:
    """The options `run` and `sweep` share: what to measure, how, and where the results go."""
    for option in reversed([
        config_option, mode_option, prompts_options, result_file_options, max_error_rate_option,
        click.option("--api-key", help="API key (default: TOKENBENCH_API_KEY or the mode's variable)."),
        base_url_option, model_option, max_tokens_option,
        redis_url_option("default: an embedded Redis for this run"),
        *mock_options, request_options, slo_option, warmup_option, ttl_option, schedule_options, processes_option,
        preflight_option, force_option, server_metrics_options, duration_option, ramp_up_option, measure_after_option,
    ]):
        command = option(command)
    return command


def _given_options(names: tuple[str, ...]) -> list[str]:
    """The options among ``names`` given on the command line or in --config (not left at their default)."""
    context = click.get_current_context()
    flags = {param.name: param.opts[-1] for param in context.command.params}
    return [flags[name] for name in names
            if context.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)]


def run_options_from_flags(concurrency: int, flags: dict[str, Any]) -> RunOptions:
    """The RunOptions that `benchmark_options`' flags describe."""
    from tokenbench.runner.local_run import MockOptions, RunOptions

    mode, base_url = flags.pop("mode"), flags.pop("base_url")
    api_key = flags.pop("api_key") or api_key_from_env(mode)
    require_api_key(mode, api_key)
    is_mock = mode == "mock" and not base_url
    if not is_mock:
        given = _given_options(("mock_ttft_ms", "mock_itl_ms", "mock_fault", "mock_fault_rate", "mock_fault_after",
                                "mock_options"))
        if given:
            raise click.UsageError(f"{', '.join(given)}: only for the built-in mock (--mode mock without --base-url)")
    mock = MockOptions(flags.pop("mock_ttft_ms"), flags.pop("mock_itl_ms"), fault=flags.pop("mock_fault"),
                       fault_rate=flags.pop("mock_fault_rate"), fault_after=flags.pop("mock_fault_after"),
                       extra_args=_mock_option_args(flags.pop("mock_options")))
    config = resolved_config(click.get_current_context())
    inputs = benchmark_inputs(mode, base_url, flags.pop("model"), flags.pop("max_tokens"), flags,
                              placeholder_base_url=PLACEHOLDER_BASE_URL if is_mock else None)
    return RunOptions(
        config=config,
        endpoint=inputs.endpoint,
        prompts=inputs.workload.prompts,
        workload=inputs.workload.description,
        turn_delay_s=inputs.workload.turn_delay_s,
        time_bounds=inputs.time_bounds,
        concurrency=concurrency,
        api_key=api_key,
        redis_url=flags.pop("redis_url"),
        mock=mock if is_mock else None,
        slo=flags.pop("slo"),
        warmup=flags.pop("warmup"),
        ttl_s=flags.pop("ttl_s"),
        schedule=inputs.schedule,
        processes=flags.pop("processes"),
        preflight=flags.pop("preflight"),
        server_metrics=metrics_source_from_flags(flags),
    )


@cli.command()
@click.option("--concurrency", type=click.IntRange(1, 65536), default=1, show_default=True,
              help="Requests in flight at most (streams, spread over --processes).")
@benchmark_options
def run(concurrency, max_error_rate, force, **flags) -> None:
    """Enqueue, work and report in one command (the original harness's form)."""
    from tokenbench.runner.local_run import run_benchmark

    files = result_files_from_flags(flags)
    options = run_options_from_flags(concurrency, flags)
    _check_capacity(concurrency, options.worker_processes(concurrency), force)
    outcome = run_benchmark(options)
    _emit(outcome.report, files)
    if outcome.redis_lost:
        raise TokenbenchError(outcome.report["interrupted_reason"])
    if outcome.interrupted:
        click.echo("interrupted: the report covers the requests finished so far", err=True)
        sys.exit(130)
    report = outcome.report
    if not report["complete"]:
        raise TokenbenchError(f"{report['missing_runs']} of {report['num_prompts']} requests have no record")
    _exit_on_failures(report, max_error_rate)


@cli.command()
@click.option("--concurrency", "concurrencies", required=True, callback=parse_levels, metavar="N,N,...",
              help="Concurrency levels, one run each, in order, e.g. 1,5,10,20; with several --request-rate "
                   "values or --auto, one concurrency: the cap of every level.")
@click.option("--auto", "auto_rates", type=click.IntRange(1, 100), metavar="N",
              help="Find the server's range, then sweep it: a closed-loop level at 1 stream and one at --concurrency "
                   "(the saturation throughput), then N request rates spread evenly between their throughputs.")
@benchmark_options
def sweep(concurrencies, auto_rates, max_error_rate, force, **flags) -> None:
    """One run per level on the same Redis and server, a level being a concurrency (the workers
    follow it) or, with --request-rate R,R,..., a request rate: a table of throughput and latency
    per level, where TTFT p99 turns (the knee), one JSON holding every run, and with --html the
    throughput-latency curve. --auto finds the rates itself (guidellm's sweep)."""
    from tokenbench.aggregator.export import results_csv
    from tokenbench.aggregator.sweep import format_sweep, sweep_document
    from tokenbench.runner.auto_sweep import AutoSweep, by_load
    from tokenbench.runner.local_run import SweepLevel, run_sweep

    files = result_files_from_flags(flags)
    rates = flags["request_rate"] or ()
    if len(rates) > 1 and len(concurrencies) > 1:
        raise click.UsageError("sweep concurrency levels or request rates, not both: give one --concurrency as "
                               "the cap of a rate sweep")
    auto = None
    if auto_rates is not None:
        if rates or len(concurrencies) > 1 or concurrencies[0] < 2:
            raise click.UsageError("--auto finds its own request rates: give no --request-rate and one --concurrency "
                                   "of 2 or more (its saturation level and every rate level's cap)")
        auto = AutoSweep(auto_rates, concurrencies[0])
        # A placeholder rate carries --arrival, --burstiness and --seed into the rate levels' schedules.
        rates = (1.0,) if flags["arrival"] is not None or flags["burstiness"] is not None else ()
    flags["request_rate"] = rates[:1] or None
    options = run_options_from_flags(concurrencies[0], flags)
    then = None
    if auto is not None:
        levels = [SweepLevel(1), SweepLevel(auto.concurrency)]

        def then(reports: list[Report]) -> list[SweepLevel] | str:
            synchronous, saturation = (report["request_throughput_per_s"] or 0.0 for report in reports)
            between = auto.rates_between(synchronous, saturation)
            if not between:
                return (f"the saturation level ({saturation:g} req/s at concurrency {auto.concurrency}) is not above "
                        f"the synchronous one ({synchronous:g} req/s): there are no rates between them to sweep")
            return [SweepLevel(auto.concurrency, schedule) for schedule in auto.schedules(options.schedule, between)]
    elif len(rates) > 1:
        levels = [SweepLevel(concurrencies[0], _schedule_at(options.schedule, rate)) for rate in rates]
    else:
        levels = [SweepLevel(concurrency, options.schedule) for concurrency in concurrencies]
    _check_capacity(max(concurrencies), options.worker_processes(max(concurrencies)), force)
    outcome = run_sweep(options, levels, max_error_rate, then=then)
    if auto is not None:
        reports = by_load(outcome.reports)
        document = sweep_document(concurrencies, [r["request_rate"] for r in reports], max_error_rate, reports,
                                  outcome.stopped_early, options.config, auto=auto)
    else:
        document = sweep_document(concurrencies, list(rates) if len(rates) > 1 else None, max_error_rate,
                                  outcome.reports, outcome.stopped_early, options.config)
    click.echo(terminal_safe(format_sweep(document)))
    first_run = outcome.reports[0]["run_id"] if outcome.reports else "none"

    def html() -> bytes:
        from tokenbench.aggregator.html import render_sweep_report

        return render_sweep_report(document).encode()
    write_result_files(_present([(files.json_path(f"sweep-{first_run}"), lambda: document_json(document)),
                                 (files.csv, lambda: results_csv(*outcome.reports).encode()),
                                 (files.html, html)]))
    if outcome.interrupted:
        sys.exit(130)
    if outcome.stopped_early:
        raise TokenbenchError(f"sweep stopped early: {outcome.stopped_early}")
    if outcome.reports:
        _exit_on_failures(outcome.reports[-1], max_error_rate)


@cli.command()
@redis_url_option("default redis://localhost:6379/0")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Newest runs to list.")
def runs(redis_url, limit) -> None:
    """List the runs in a Redis: id, mode, status, records/total, created, model."""
    from tokenbench.aggregator.runs import format_runs, list_runs

    connection = connect(redis_url or default_redis_url(), "runs")
    click.echo(terminal_safe(format_runs(list_runs(connection, limit))))


@cli.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--output", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Write the comparison as JSON here.")
@click.option("--fail-on-regression", "threshold_pct", type=FiniteFloatRange(min=0, max=1000), metavar="PCT",
              help="Exit 1 when a metric of a run is worse than the baseline's beyond noise by more than PCT "
                   "percent (the whole 95%% interval of the difference lies beyond it): a CI regression gate.")
def compare(results, output, threshold_pct) -> None:
    """Compare result files with the first: headline metrics, ratios, and a bootstrap verdict for each.
    Warns when the runs' workloads differ or one of them is incomplete."""
    from tokenbench.aggregator.compare import compare as compare_reports
    from tokenbench.aggregator.compare import comparison_warnings, format_comparison, regressions

    if len(results) < 2:
        raise click.UsageError("give at least two result files: a baseline and one to compare with it")
    if output is not None:
        check_writable(output, "--output")
    baseline_path, *others = results
    baseline = load_result(baseline_path)
    comparisons = []
    regressed = []
    for path in others:
        other = load_result(path)
        rows = compare_reports(baseline, other)
        warnings = comparison_warnings(baseline, other)
        comparisons.append({"baseline": str(baseline_path), "other": str(path), "warnings": warnings, "metrics": rows})
        for warning in warnings:
            click.echo(terminal_safe(f"warning: {path.name} vs {baseline_path.name}: {warning}"), err=True)
        click.echo(terminal_safe(format_comparison(baseline_path.name, path.name, rows)))
        if threshold_pct is not None:
            regressed += [f"{row['metric']} of {path.name} is worse by at least {row['worse_by_at_least_pct']:g}%"
                          for row in regressions(rows, threshold_pct)]
    if output is not None:
        _write(output, document_json(comparisons))
    if regressed:
        raise TokenbenchError(f"regression beyond {threshold_pct:g}% (--fail-on-regression): " + "; ".join(regressed))


@cli.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True, path_type=Path), required=True,
              help="The HTML file to write.")
@click.option("--label", "labels", multiple=True, help="Name for each result, in order (default: file names).")
def plot(results, output, labels) -> None:
    """Draw result files into one self-contained HTML page: TTFT, ITL and E2EL distributions (overlaid when
    several), output tokens/s over time, and each run's requests by worker; for a sweep's JSON, its
    throughput-latency curves too. Works offline."""
    from tokenbench.aggregator.html import render_report, render_sweep_report
    from tokenbench.aggregator.sweep import level_name

    if len(labels) > len(results):
        raise click.BadParameter(f"{len(labels)} labels for {len(results)} results", param_hint="'--label'")
    check_writable(output, "--output")
    names = list(labels) + [path.stem for path in results[len(labels):]]
    documents = [load_result_or_sweep(path) for path in results]
    if len(documents) == 1 and "sweep" in documents[0]:
        _write(output, render_sweep_report(cast("SweepDocument", documents[0])).encode())
        return
    named: list[tuple[str, Report]] = []
    for name, document in zip(names, documents):
        if "sweep" in document:
            sweep = cast("SweepDocument", document)
            named += [(f"{name} {level_name(level)}", run) for level, run in zip(sweep["levels"], sweep["runs"])]
        else:
            named.append((name, cast("Report", document)))
    _write(output, render_report(named).encode())


@cli.command()
@click.option("--concurrency", "levels", default="1,16,64", show_default=True, callback=parse_levels,
              metavar="N,N,...", help="Concurrency levels to calibrate at.")
@click.option("--requests-per-worker", type=click.IntRange(1, 100_000), default=4, show_default=True)
@click.option("--tokens", type=click.IntRange(2, 100_000), default=128, show_default=True, help="Tokens per response.")
@click.option("--ttft-ms", type=MOCK_MS, default=50.0, show_default=True)
@click.option("--itl-ms", type=FiniteFloatRange(min=0, max=MOCK_MS_MAX, min_open=True), default=10.0, show_default=True)
@output_option
def calibrate(levels, requests_per_worker, tokens, ttft_ms, itl_ms, output) -> None:
    """Measure this machine's harness error budget against the built-in mock: the receive lag tokenbench adds
    to each chunk and its TTFT error, next to a bare aiohttp client's at the same concurrency."""
    from tokenbench.runner.calibrate import CalibrationSettings, format_calibration
    from tokenbench.runner.calibrate import calibrate as run_calibration

    if output is not None:
        check_writable(output, "--output")
    settings = CalibrationSettings(tuple(levels), requests_per_worker, tokens, ttft_ms, itl_ms)
    levels_measured = run_calibration(settings)
    click.echo(format_calibration(levels_measured, settings))
    if output is not None:
        document = {"calibration": settings.__dict__ | {"levels": list(settings.levels)}, "levels": levels_measured}
        _write(output, document_json(document))


@cli.command()
def prompts() -> None:
    """List the built-in prompts: id, category and first words."""
    from tokenbench.producer.prompts import BUILTIN_PROMPTS

    for prompt in BUILTIN_PROMPTS:
        first_words = " ".join(prompt.text.split()[:8])
        click.echo(f"{prompt.id:<11} {prompt.category:<22} {first_words}")


@cli.command("mock-server")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0 picks a free port.")
@click.option("--ttft-ms", type=MOCK_MS, default=50.0, show_default=True)
@click.option("--itl-ms", type=MOCK_MS, default=10.0, show_default=True)
@click.option("--output-tokens", type=click.IntRange(1, MAX_TOKENS), help="Tokens per response (default: max_tokens).")
@click.option("--replay", type=click.Path(dir_okay=False, path_type=Path),
              help="Answer streamed requests with a recorded *.timed.tsv stream, at its recorded times.")
@click.option("--fault", callback=parse_faults, metavar="FAULT[,FAULT...]",
              help="Inject a fault into streamed responses (several, comma-separated: a mix, each in turn): "
                   + "; ".join(f"{k}: {v}" for k, v in MOCK_FAULTS.items()))
@click.option("--fault-rate", type=click.FloatRange(0, 1), default=1.0, show_default=True,
              help="Share of streamed requests that get the fault (spread evenly).")
@click.option("--fault-after", type=click.IntRange(0, MAX_TOKENS), default=1, show_default=True,
              help="Tokens sent before the fault (for stall, drop, garbage, error).")
@click.option("--retry-after-s", type=click.IntRange(0, 86_400), default=1, show_default=True,
              help="Retry-After of the rate_limit and overloaded faults.")
@click.option("--reasoning", type=click.Choice(REASONING_STYLES),
              help="Send the first --reasoning-tokens tokens as reasoning, in this style.")
@click.option("--reasoning-tokens", type=click.IntRange(0, MAX_TOKENS), default=8, show_default=True)
@click.option("--tokens-per-chunk", type=click.IntRange(1, MAX_TOKENS), default=1, show_default=True,
              help="Tokens in each chunk (vLLM/SGLang --stream-interval).")
@click.option("--continuous-usage", is_flag=True, help="Running usage on every chunk (vLLM continuous_usage_stats).")
@click.option("--logprobs", is_flag=True, help="logprobs.content, one entry per token, on every token chunk.")
@click.option("--usage-style", type=click.Choice(USAGE_STYLES), default="openai", show_default=True,
              help="openrouter: provider, gen- id, cost, reasoning_tokens, usage chunk repeating finish_reason.")
@click.option("--error-style", type=click.Choice(ERROR_STYLES), default="openrouter", show_default=True,
              help="The mid-stream error chunk of --fault error: OpenRouter's, OpenAI's or vLLM's.")
@click.option("--keepalive-ms", type=click.FloatRange(min=0, min_open=True),
              help="Send ': OPENROUTER PROCESSING' comments this often until the first token.")
@click.option("--sse", "sse_variants", callback=parse_sse_variants_option, metavar="VARIANT,...",
              help="SSE framing variants: " + ", ".join(SSE_VARIANTS) + ".")
@click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Processes serving the port (SO_REUSEPORT), for more streams than one core can time. With more "
                   "than one there is no /metrics: each process counts only its own requests.")
@click.option("--prefix-cache", is_flag=True,
              help="Simulate a prefix cache (blocks of 16 words): a prompt's already seen prefix shortens its TTFT in "
                   "proportion and is reported as usage.prompt_tokens_details.cached_tokens.")
@click.option("--stamp-send-time", is_flag=True,
              help="Write each chunk's send time (monotonic ns) into it, so a client on this host can measure its "
                   "own receive lag (what `tokenbench calibrate` does).")
def mock_server(host, port, ttft_ms, itl_ms, output_tokens, replay, fault, fault_rate, fault_after, retry_after_s,
                reasoning, reasoning_tokens, tokens_per_chunk, continuous_usage, logprobs, usage_style, error_style,
                keepalive_ms, sse_variants, processes, prefix_cache, stamp_send_time) -> None:
    """Serve an OpenAI-compatible streaming endpoint with exact, known timing and the shapes and
    faults of real servers."""
    from tokenbench.mock import READY_LINE_PREFIX
    from tokenbench.mock.replay import load_timed_transcript
    from tokenbench.mock.server import MockSettings, bind_socket, serve
    from tokenbench.mock.shapes import StreamShape

    recorded = load_timed_transcript(replay) if replay is not None else None

    try:
        sock = bind_socket(host, port)
    except OSError as exc:
        raise TokenbenchError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    bound_host, bound_port = sock.getsockname()[:2]
    shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    click.echo(f"{READY_LINE_PREFIX}http://{shown_host}:{bound_port}")
    sys.stdout.flush()
    shape = StreamShape(reasoning=reasoning, reasoning_tokens=reasoning_tokens, tokens_per_chunk=tokens_per_chunk,
                        continuous_usage=continuous_usage, logprobs=logprobs, usage_style=usage_style,
                        keepalive_ms=keepalive_ms, error_style=error_style, sse=sse_variants)
    settings = MockSettings(ttft_ms=ttft_ms, itl_ms=itl_ms, output_tokens=output_tokens, replay=recorded,
                            stamp_send_time=stamp_send_time, prefix_cache=prefix_cache,
                            fault=fault, fault_rate=fault_rate, fault_after=fault_after, retry_after_s=retry_after_s,
                            shape=shape)
    serve(settings, sock, processes)


def _mock_option_args(options: tuple[str, ...]) -> tuple[str, ...]:
    """``reasoning=think`` -> ``--reasoning think``, checked against `mock-server`'s own options now,
    so a mistake is a usage error before anything starts."""
    args: list[str] = []
    for option in options:
        name, sep, value = option.partition("=")
        args += [f"--{name.strip().removeprefix('--')}"] + ([value] if sep else [])
    try:
        mock_server.make_context("mock-server", list(args), resilient_parsing=False)
    except click.UsageError as exc:
        raise click.BadParameter(exc.format_message(), param_hint="'--mock-option'") from None
    return tuple(args)


def _emit(result: Report, files: ResultFiles) -> None:
    """The summary table, then every file asked for (and the JSON by default)."""
    from tokenbench.aggregator.export import results_csv
    from tokenbench.aggregator.table import format_summary

    def html() -> bytes:
        from tokenbench.aggregator.html import render_report

        return render_report([(result["run_id"], result)]).encode()
    click.echo(terminal_safe(format_summary(result)))
    write_result_files(_present([(files.json_path(result["run_id"]), lambda: document_json(result)),
                                 (files.csv, lambda: results_csv(result).encode()),
                                 (files.html, html)]))


def _present(files: list[tuple[Path | None, Any]]) -> list[tuple[Path, Any]]:
    return [(path, render) for path, render in files if path is not None]


def _schedule_at(schedule: ArrivalSchedule | None, rate: float) -> ArrivalSchedule | None:
    """The sweep's schedule at one of its rates (inf: the closed loop)."""
    if rate == math.inf or schedule is None:
        return None if rate == math.inf else ArrivalSchedule(rate)
    return replace(schedule, rate=rate)


def _check_capacity(concurrency: int, processes: int, force: bool) -> None:
    """Refuse streams this host cannot time (unless --force) or hold open (ever), before anything starts."""
    from tokenbench.worker.capacity import per_process, too_few_open_files, too_many_streams

    problem = too_few_open_files(per_process(concurrency, processes)) or (None if force else
                                                                          too_many_streams(concurrency))
    if problem:
        raise click.UsageError(problem)


def _exit_on_failures(report: Report, max_error_rate: float) -> None:
    reason = failure_reason(report, max_error_rate)
    if reason is not None:
        raise TokenbenchError(reason)


def _write(path: Path, content: bytes) -> None:
    write_result_files([(path, lambda: content)])


def _is_redis_error(exc: Exception) -> bool:
    """Whether ``exc`` is redis-py's, without importing redis-py (commands that never touch Redis skip it)."""
    redis = sys.modules.get("redis")
    return redis is not None and isinstance(exc, redis.RedisError)


# Flags of vLLM's `bench serve` (and guidellm's) that people type out of habit: what to use here.
FAMILIAR_FLAGS = {
    "--goodput": "goodput objectives are --slo, e.g. --slo ttft=500,tpot=50 (ms)",
    "--save-result": "results are saved by default (tokenbench-results/<run id>.json); --output FILE chooses the file",
    "--result-dir": "--output FILE chooses where the result goes (default tokenbench-results/<run id>.json)",
    "--result-filename": "--output FILE chooses where the result goes",
    "--percentile-metrics": "every result has p50/p90/p95/p99 of TTFT, TPOT, ITL and E2EL (the JSON's "
                            "*_ms objects; the table shows them all)",
    "--metric-percentiles": "every result has p50/p90/p95/p99 of TTFT, TPOT, ITL and E2EL (the JSON's "
                            "*_ms objects; the table shows them all)",
    "--num-prompts": "use --prompts N",
    "--max-concurrency": "use --concurrency N (requests in flight at most)",
    "--random-input-len": "use --input-tokens N",
    "--random-output-len": "use --output-tokens N",
    "--dataset-name": "use --dataset (sharegpt) with --dataset-path, or --input-tokens/--output-tokens",
    "--backend": "use --api openai|anthropic and --mode",
    "--endpoint": "give the base URL with --base-url (e.g. http://host:8000/v1)",
    "--tokenizer-mode": "--tokenizer takes a tokenizer.json",
}


def _usage_message(exc: click.ClickException | TokenbenchError) -> str:
    if isinstance(exc, click.NoSuchOption) and exc.option_name in FAMILIAR_FLAGS:
        return f"no such option {exc.option_name}: {FAMILIAR_FLAGS[exc.option_name]}"
    return exc.format_message()


def _check_utf8(arguments: list[str]) -> None:
    """Every argument reaches Redis, JSON or HTML as UTF-8: bytes that are not (Python holds them as
    lone surrogates) are a usage error here, not a traceback wherever the value is first written."""
    for argument in arguments:
        try:
            argument.encode()
        except UnicodeEncodeError:
            shown = argument.encode(errors="backslashreplace").decode()
            raise click.UsageError(f"argument {shown!r} is not valid UTF-8") from None


def main() -> None:
    """Console entry point: click's usage errors and ours exit with one line on stderr, never a traceback."""
    try:
        _check_utf8(sys.argv[1:])
        code = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except (click.ClickException, TokenbenchError) as exc:
        click.echo(f"tokenbench: error: {one_line(_usage_message(exc))}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:
        if not _is_redis_error(exc):
            raise
        click.echo(f"tokenbench: error: Redis: {one_line(str(exc))}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
