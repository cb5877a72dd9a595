"""Everything `tokenbench run` does, in order, and the cleanup it owes on every way out."""

from __future__ import annotations

import math
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

from tokenbench.aggregator.collect import missing_indices, read_records, wait_for_records
from tokenbench.aggregator.metrics import build_report
from tokenbench.producer.enqueue import enqueue_run, new_run_id
from tokenbench.producer.prompts import Prompt
from tokenbench.runner.children import launch_mock_server, mock_server_url, start_child, stop_child
from tokenbench.runner.embedded_redis import embedded_redis
from tokenbench.runner.progress import Progress
from tokenbench.shared import keys
from tokenbench.shared.config import GENERIC_API_KEY_ENV, Endpoint
from tokenbench.shared.record_store import read_warmup_records
from tokenbench.shared.redis_conn import connect

# Margin on top of the longest a run can take when every request hits its own total timeout.
WAIT_MARGIN_S = 60.0


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
    worker_log_level: str = "WARNING"


@dataclass
class RunOutcome:
    report: dict[str, Any]
    interrupted: bool


def wait_bound_s(options: RunOptions) -> float:
    """How long `run` waits for records at most: every request of the slowest worker timing out."""
    rounds = math.ceil(len(options.prompts) / options.concurrency)
    return rounds * options.endpoint.total_timeout_s + WAIT_MARGIN_S


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_benchmark(options: RunOptions, progress_stream: TextIO = sys.stderr) -> RunOutcome:
    """Start what the run needs, enqueue, run the workers, collect; stop all it started."""
    with ExitStack() as started, _sigterm_as_interrupt():
        redis_url = options.redis_url or started.enter_context(embedded_redis())
        connection = connect(redis_url, "run")
        run_id = new_run_id()
        queue = keys.run_queue(run_id)
        mock = None
        if options.mock is not None:
            mock = launch_mock_server(options.mock.to_args())
            started.callback(stop_child, mock)
        # The workers start while the mock server does and wait on the run's own queue; they
        # get jobs only once the endpoint is ready, so no request waits on a server starting up.
        # (The stack stops them first: they are registered last.)
        worker_env = dict(os.environ)
        if options.api_key:
            worker_env[GENERIC_API_KEY_ENV] = options.api_key
        workers = start_child(
            ["worker", "-n", str(options.concurrency), "--redis-url", redis_url,
             "--queue", queue, "--log-level", options.worker_log_level],
            env=worker_env,
        )
        started.callback(stop_child, workers)
        endpoint = options.endpoint
        if mock is not None:
            endpoint = endpoint.with_base_url(mock_server_url(mock) + "/v1")
        meta = enqueue_run(
            connection,
            endpoint,
            options.prompts,
            run_id=run_id,
            queue_name=queue,
            requested_concurrency=options.concurrency,
            warmup=options.warmup,
            ttl_s=options.ttl_s,
        )
        progress = Progress(connection, run_id, meta.num_prompts, progress_stream)

        def keep_waiting(_done: int | None) -> bool:
            progress.update()
            return workers.poll() is None

        interrupted = False
        try:
            wait_for_records(connection, meta, wait_bound_s(options), keep_waiting)
            progress.update()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            progress.finish()
        # Stopped before the records are read: a warm shutdown lets requests in flight finish
        # (within stop_child's grace) and their records count.
        stop_child(workers)
        records = read_records(connection, run_id)
        report = build_report(meta, records, missing_indices(meta, records), interrupted=interrupted,
                              slo=options.slo, warmup_records=read_warmup_records(connection, run_id))
        return RunOutcome(report=report, interrupted=interrupted)
