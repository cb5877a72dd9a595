"""Everything `tokenbench run` does, in order, and the cleanup it owes on every way out."""

from __future__ import annotations

import math
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from typing import Any, TextIO

import redis
from redis import Redis
from rq import Queue, Worker

from tokenbench.aggregator.collect import missing_indices, read_records, run_start, wait_for_records
from tokenbench.aggregator.report import build_report
from tokenbench.aggregator.schema import Report
from tokenbench.aggregator.verdict import error_rate
from tokenbench.producer.arrivals import ArrivalSchedule
from tokenbench.producer.conversations import sessions_of
from tokenbench.producer.enqueue import enqueue_run, new_run_id
from tokenbench.producer.prompts import Prompt
from tokenbench.producer.time_bounds import UNBOUNDED, TimeBounds
from tokenbench.runner.children import launch_mock_server, mock_server_url, start_child, stop_child
from tokenbench.runner.cpu import CpuSampler
from tokenbench.runner.embedded_redis import embedded_redis
from tokenbench.runner.metrics_scraper import MetricsSource, start_scraper
from tokenbench.runner.preflight import preflight
from tokenbench.runner.progress import Progress
from tokenbench.runner.server_cpu import ServerCpuWatch
from tokenbench.shared import keys
from tokenbench.shared.endpoint import Endpoint
from tokenbench.shared.errors import TokenbenchError
from tokenbench.shared.presets import GENERIC_API_KEY_ENV
from tokenbench.shared.record_store import read_loop_lag, read_warmup_records, read_workers
from tokenbench.shared.redis_conn import REDIS_URL_ENV, connect
from tokenbench.shared.signing import SECRET_ENV
from tokenbench.shared.terminal import terminal_safe
from tokenbench.worker.capacity import cpu_count

# Margin on top of the longest a run can take when every request hits its own total timeout.
WAIT_MARGIN_S = 60.0
WORKERS_READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class MockOptions:
    """The `tokenbench mock-server` options of a `run --mode mock`."""

    ttft_ms: float
    itl_ms: float
    output_tokens: int | None = None
    fault: str | None = None
    fault_rate: float = 1.0
    fault_after: int = 1
    extra_args: tuple[str, ...] = ()  # any other mock-server options, already checked

    def to_args(self) -> list[str]:
        args = ["--ttft-ms", str(self.ttft_ms), "--itl-ms", str(self.itl_ms)]
        if self.output_tokens is not None:
            args += ["--output-tokens", str(self.output_tokens)]
        if self.fault is not None:
            args += ["--fault", self.fault, "--fault-rate", str(self.fault_rate),
                     "--fault-after", str(self.fault_after)]
        return args + list(self.extra_args)


@dataclass(frozen=True)
class RunOptions:
    endpoint: Endpoint
    prompts: list[Prompt]
    concurrency: int
    api_key: str | None = None
    redis_url: str | None = None  # None: an embedded Redis for this run
    mock: MockOptions | None = None  # set for --mode mock
    slo: dict[str, float] | None = None  # goodput objectives (ms)
    warmup: int = 0  # warm-up requests per worker
    ttl_s: int = keys.RUN_TTL_S
    schedule: ArrivalSchedule | None = None  # open loop (--request-rate); None: closed loop
    config: dict[str, Any] | None = None  # the resolved options, saved in the result
    workload: dict[str, Any] | None = None  # where the prompts came from (see producer/workloads.py)
    worker_log_level: str = "WARNING"
    processes: int | None = None  # worker processes the concurrency is spread over; None: one per core
    preflight: bool = True  # one unmeasured request to a server of the user's before the run
    server_metrics: MetricsSource | None = MetricsSource()  # None: --no-server-metrics
    turn_delay_s: float = 0.0  # conversations: think time between an answer and the next turn
    time_bounds: TimeBounds = UNBOUNDED  # --duration, --ramp-up, --measure-after

    def worker_processes(self, concurrency: int) -> int:
        return min(self.processes or cpu_count(), concurrency)


@dataclass
class RunOutcome:
    report: Report
    interrupted: bool
    redis_lost: bool = False  # the embedded Redis died: the report holds nothing it had


# `run` gives up on its embedded Redis once it has been unreachable this long: with it went the
# run's jobs and records, so nothing is left to wait for.
EMBEDDED_REDIS_LOSS_S = 5.0


class EmbeddedRedisLost(Exception):
    pass


class RedisLossWatch:
    """Raises EmbeddedRedisLost when an embedded Redis has been unreachable for EMBEDDED_REDIS_LOSS_S.
    An external one is waited for (the workers keep their records until it is back)."""

    def __init__(self, embedded: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self._embedded = embedded
        self._clock = clock
        self._unreachable_since: float | None = None

    def saw(self, reachable: bool) -> None:
        if reachable or not self._embedded:
            self._unreachable_since = None
            return
        now = self._clock()
        self._unreachable_since = self._unreachable_since or now
        if now - self._unreachable_since >= EMBEDDED_REDIS_LOSS_S:
            raise EmbeddedRedisLost(f"the embedded Redis stopped answering for {EMBEDDED_REDIS_LOSS_S:g} s: the run's "
                                    "jobs and records went with it")


@dataclass(frozen=True)
class SweepLevel:
    """One level of a sweep: its concurrency, and its schedule (None: the closed loop)."""

    concurrency: int
    schedule: ArrivalSchedule | None = None

    def describe(self) -> str:
        if self.schedule is None:
            return f"concurrency {self.concurrency}"
        return f"{self.schedule.rate:g} req/s (at most {self.concurrency} in flight)"


@dataclass
class SweepOutcome:
    reports: list[Report]  # one per level run, in order
    stopped_early: str | None  # why the sweep stopped before its last level
    interrupted: bool


def wait_bound_s(options: RunOptions, concurrency: int) -> float:
    """How long `run` waits for records at most: every request of the slowest worker timing out,
    after the last one is due."""
    jobs = sessions_of(options.prompts)  # a conversation's turns, one after the other, are one job
    rounds = math.ceil(len(jobs) / concurrency) * max(len(job) for job in jobs)
    schedule_s = options.schedule.send_offsets(len(jobs))[-1] if options.schedule else 0.0
    bound = schedule_s + rounds * (options.endpoint.total_timeout_s + options.turn_delay_s) + WAIT_MARGIN_S
    duration = options.time_bounds.duration_s
    if duration is not None:  # nothing is sent after it: the last requests end within their timeout
        bound = min(bound, duration + options.endpoint.total_timeout_s * max(len(job) for job in jobs) + WAIT_MARGIN_S)
    return bound


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Services:
    """What every run of a `run` or `sweep` shares: the Redis, and the mock server when there is one."""

    def __init__(self, started: ExitStack, options: RunOptions) -> None:
        self.embedded = options.redis_url is None
        self.redis_url = options.redis_url or started.enter_context(embedded_redis())
        self.connection = connect(self.redis_url, "run")
        self._endpoint = options.endpoint
        self._mock = None
        if options.mock is not None:
            self._mock = launch_mock_server(options.mock.to_args())
            started.callback(stop_child, self._mock)

    def endpoint(self) -> Endpoint:
        """The endpoint to measure; for the mock, once it listens (so the workers can start meanwhile)."""
        if self._mock is not None:
            self._endpoint = self._endpoint.with_base_url(mock_server_url(self._mock) + "/v1")
            self._mock = None
        return self._endpoint


def check_endpoint(options: RunOptions, progress_stream: TextIO) -> None:
    """The pre-flight request (runner/preflight.py), to the user's server; the built-in mock needs none."""
    if not options.preflight or options.mock is not None:
        return
    result = preflight(options.endpoint, options.prompts[0], options.api_key)
    if result.warning:
        progress_stream.write(f"warning: {terminal_safe(result.warning)}\n")


def run_benchmark(options: RunOptions, progress_stream: TextIO = sys.stderr) -> RunOutcome:
    """Check the endpoint, start what the run needs, enqueue, run the workers, collect; stop all it started."""
    check_endpoint(options, progress_stream)
    with ExitStack() as started, _sigterm_as_interrupt():
        return run_once(Services(started, options), options, options.concurrency, progress_stream)


def run_sweep(options: RunOptions, levels: list[SweepLevel], max_error_rate: float,
              progress_stream: TextIO = sys.stderr,
              then: Callable[[list[Report]], list[SweepLevel] | str] | None = None) -> SweepOutcome:
    """One run per level (a concurrency, or a request rate), in order, on the same Redis and mock;
    stops after a level whose share of failed requests exceeds ``max_error_rate``. ``then`` gives the
    levels that follow from the reports of these (or why there are none: the sweep stops there)."""
    reports: list[Report] = []
    check_endpoint(options, progress_stream)
    with ExitStack() as started, _sigterm_as_interrupt():
        services = Services(started, options)

        def run_levels(todo: list[SweepLevel], total: int) -> SweepOutcome | None:
            for level in todo:
                number = len(reports) + 1
                progress_stream.write(f"sweep: {level.describe()} ({number} of {total})\n")
                outcome = run_once(services, replace(options, schedule=level.schedule), level.concurrency,
                                   progress_stream)
                reports.append(outcome.report)
                if outcome.interrupted:
                    return SweepOutcome(reports, "interrupted", True)
                rate = error_rate(outcome.report) or 0.0
                if rate > max_error_rate and number < total:
                    return SweepOutcome(reports, f"error rate {rate:.1%} at {level.describe()} exceeds "
                                                 f"--max-error-rate {max_error_rate:.1%}", False)
            return None

        stopped = run_levels(levels, len(levels) + (1 if then else 0))
        if stopped is not None or then is None:
            return stopped or SweepOutcome(reports, None, False)
        following = then(reports)
        if isinstance(following, str):
            return SweepOutcome(reports, following, False)
        return run_levels(following, len(levels) + len(following)) or SweepOutcome(reports, None, False)


def run_once(services: Services, options: RunOptions, concurrency: int, progress_stream: TextIO) -> RunOutcome:
    connection = services.connection
    run_id = new_run_id()
    queue = keys.run_queue(run_id)
    # The workers start while the mock server does and wait on the run's own queue; they get jobs
    # only once the endpoint is ready, so no request waits on a server starting up.
    # The Redis URL (its password, if any) goes by environment: a command line is readable with `ps`.
    worker_env = dict(os.environ) | {REDIS_URL_ENV: services.redis_url}
    if options.api_key:
        worker_env[GENERIC_API_KEY_ENV] = options.api_key
    # The run's workers take only jobs signed with this run's secret, handed over in their environment.
    secret = secrets.token_hex(32)
    worker_env[SECRET_ENV] = secret
    processes = options.worker_processes(concurrency)
    workers = start_child(
        ["worker", "-n", str(processes), "--concurrency", str(concurrency),
         "--queue", queue, "--log-level", options.worker_log_level],
        env=worker_env,
    )
    try:
        endpoint = services.endpoint()
        server_cpu = ServerCpuWatch.start(endpoint.base_url)  # before the jobs: finding it reads all of /proc
        # The first scrape is the baseline: before any request of the run goes out.
        scraper = start_scraper(options.server_metrics, endpoint.mode, endpoint.base_url,
                                lambda line: print(terminal_safe(line), file=progress_stream))
        if options.schedule is not None or options.time_bounds != UNBOUNDED:  # when every worker can keep it
            wait_for_workers(connection, queue, processes, workers)
        meta = enqueue_run(
            connection,
            endpoint,
            options.prompts,
            run_id=run_id,
            queue_name=queue,
            requested_concurrency=concurrency,
            warmup=options.warmup,
            ttl_s=options.ttl_s,
            schedule=options.schedule,
            config=options.config,
            workload=options.workload,
            turn_delay_s=options.turn_delay_s,
            time_bounds=options.time_bounds,
            secret=secret.encode(),
        )
        progress = Progress(connection, run_id, meta.num_prompts, progress_stream,
                            duration_s=options.time_bounds.duration_s)
        cpu = CpuSampler()
        redis_lost = RedisLossWatch(services.embedded)

        def keep_waiting(done: int | None) -> bool:
            progress.update()
            redis_lost.saw(done is not None)
            return workers.poll() is None

        interrupted: str | None = None  # why the run ended before its last record
        lost = False
        try:
            wait_for_records(connection, meta, wait_bound_s(options, concurrency), keep_waiting)
            progress.update()
        except KeyboardInterrupt:
            interrupted = "Ctrl-C or SIGTERM"
        except EmbeddedRedisLost as exc:
            interrupted, lost = str(exc), True
        finally:
            progress.finish()
    finally:
        # Stopped before the records are read: a warm shutdown lets requests in flight finish
        # (within stop_child's grace) and their records count.
        stop_child(workers)
    server = scraper.finish() if scraper is not None else None
    try:
        records = read_records(connection, meta)
        warmups, environment, loop_lag = (read_warmup_records(connection, run_id), read_workers(connection, run_id),
                                          read_loop_lag(connection, run_id))
        started_at = run_start(connection, run_id)
    except (redis.ConnectionError, redis.TimeoutError):
        if interrupted is None:
            raise
        records, warmups, environment, loop_lag = [], [], {}, {}  # gone with the Redis that held them
        started_at = None
    report = build_report(meta, records, missing_indices(meta, records), interrupted=interrupted is not None,
                          run_started_at=started_at, interrupted_reason=interrupted, slo=options.slo,
                          warmup_records=warmups, worker_environment=environment, loop_lag=loop_lag,
                          server_metrics=server)
    # This machine ran the workers (and maybe the server): a saturated CPU delays what they measure.
    report["local_cpu"] = {"cores": os.cpu_count() or 1, "busy_share": cpu.busy_share(),  # the whole machine's
                           "server_cpu_wait": server_cpu.finish()}
    return RunOutcome(report=report, interrupted=interrupted is not None, redis_lost=lost)


def wait_for_workers(connection: Redis, queue: str, count: int, pool: subprocess.Popen,
                     timeout_s: float = WORKERS_READY_TIMEOUT_S) -> None:
    """Until ``count`` worker processes listen on ``queue``; an error if the pool exits or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while Worker.count(connection=connection, queue=Queue(queue, connection=connection)) < count:
        if pool.poll() is not None:
            raise TokenbenchError(f"the worker pool exited (status {pool.returncode}) before it was ready")
        if time.monotonic() > deadline:
            raise TokenbenchError(f"{count} workers were not ready within {timeout_s:g} s")
        time.sleep(0.05)
