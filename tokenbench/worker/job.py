"""The RQ job: one prompt, one streamed request, one record pushed to the run."""

from __future__ import annotations

import gc
import os
import platform
import socket
import ssl
import time
from importlib.metadata import version

import httpx
import redis
from rq import get_current_job
from rq.timeouts import JobTimeoutException

from tokenbench import __version__
from tokenbench.shared import keys
from tokenbench.shared.config import api_key_from_env
from tokenbench.shared.record_store import (
    SAVE_RETRY_S,
    InFlight,
    mark_in_flight,
    register_worker,
    save_record,
    save_warmup_record,
)
from tokenbench.shared.records import JobSpec, RequestRecord
from tokenbench.worker import clock
from tokenbench.worker.heartbeat import Heartbeat
from tokenbench.worker.measure import measure_request, worker_name
from tokenbench.worker.watchdog import StreamWatchdog

# The clock offset is measured again when it is older than this, so drift over a long run stays small.
CLOCK_RESYNC_INTERVAL_S = 60.0
# How long a scheduled job waits for its run's schedule start before it is sent unscheduled.
SCHEDULE_START_TIMEOUT_S = 60.0

_ssl_context: ssl.SSLContext | None = None  # made by preload() in the pool, inherited by every worker


def preload() -> None:
    """Do once, in the pool process before it forks, what every worker would otherwise repeat.

    Loading the CA bundle takes ~50 ms of CPU and httpx's first client ~150 ms more (lazy imports);
    64 workers starting at once on two cores spent 6 s on that before their first request.
    """
    global _ssl_context
    _ssl_context = httpx.create_ssl_context()
    httpx.Client(verify=_ssl_context).close()
    gc.collect()
    gc.freeze()


class WorkerProcess:
    """What one worker process keeps across its jobs: its HTTP client (connections are reused across
    jobs, never across a fork), watchdog, liveness key, clock offset, and the runs it has warmed up for.
    """

    def __init__(self, connection: redis.Redis) -> None:
        self.pid = os.getpid()
        self.name = worker_name()
        self.host = socket.gethostname()
        self.client = httpx.Client(
            verify=_ssl_context or httpx.create_ssl_context(),
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=16),
        )
        self.watchdog = StreamWatchdog()
        self.heartbeat = Heartbeat(connection, self.name)
        self.runs_seen: set[str] = set()  # runs this process has registered in (and warmed up for)
        self.schedule_starts: dict[str, float] = {}  # open-loop runs: run id -> the schedule's start
        self._synchronized_at = time.monotonic()
        clock.synchronize(connection)
        # Every object alive so far moves out of the garbage collector's sight: a full collection
        # over the imported modules takes ~100 ms on a small machine, and one landing inside a
        # stream would be measured as the server's latency.
        gc.collect()
        gc.freeze()

    def environment(self) -> dict[str, str]:
        """What a result needs to explain itself later: where and on what this worker ran."""
        return {"host": self.host, "python": platform.python_version(),
                "implementation": platform.python_implementation(), "platform": platform.platform(),
                "tokenbench": __version__, "rq": version("rq"), "httpx": httpx.__version__}

    def keep_clock_fresh(self, connection: redis.Redis) -> None:
        if time.monotonic() - self._synchronized_at >= CLOCK_RESYNC_INTERVAL_S:
            clock.synchronize(connection)
            self._synchronized_at = time.monotonic()


_process: WorkerProcess | None = None


def worker_process(connection: redis.Redis) -> WorkerProcess:
    """This process's WorkerProcess, made on its first job (never inherited across a fork)."""
    global _process
    if _process is None or _process.pid != os.getpid():
        _process = WorkerProcess(connection)
    return _process


def wait_until_due(send_at: float) -> None:
    """Sleep until ``send_at`` (epoch seconds on the Redis clock); at once if it has passed."""
    remaining = send_at - clock.now()
    if remaining > 0:
        time.sleep(remaining)


def schedule_start(connection: redis.Redis, run_id: str, timeout_s: float = SCHEDULE_START_TIMEOUT_S) -> float | None:
    """The open-loop schedule's start, waiting for the producer to write it (it does once every job is
    enqueued); None if it does not within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while (raw := connection.get(keys.run_schedule_start(run_id))) is None:
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)
    return float(raw)


def execute(spec_data: dict) -> None:
    """RQ entry point (``tokenbench.worker.job.execute``)."""
    spec = JobSpec.from_dict(spec_data)
    job = get_current_job()
    connection = job.connection
    process = worker_process(connection)
    process.keep_clock_fresh(connection)
    if not mark_in_flight(connection, spec.run_id,
                          InFlight(spec.index, process.name, spec.attempt, job.id), spec.ttl_s):
        return  # the run was cancelled while this job waited on the queue
    api_key = api_key_from_env(spec.endpoint["mode"])
    first_job_of_run = spec.run_id not in process.runs_seen
    if first_job_of_run:
        process.runs_seen.add(spec.run_id)
        register_worker(connection, spec.run_id, process.name, process.environment(), spec.ttl_s)
    try:
        if spec.warmup and first_job_of_run:
            for _ in range(spec.warmup):
                warmup = measure_request(process.client, spec, api_key, process.watchdog)
                warmup.warmup = True
                save_warmup_record(connection, warmup, spec.ttl_s)
        send_at = None
        if spec.send_after_s is not None:
            start = process.schedule_starts.get(spec.run_id) or schedule_start(connection, spec.run_id)
            if start is not None:
                process.schedule_starts[spec.run_id] = start
                send_at = start + spec.send_after_s
                wait_until_due(send_at)
        record = measure_request(process.client, spec, api_key, process.watchdog)
    except BaseException as exc:  # RQ interrupted the request: a cold shutdown, or its job timeout
        if isinstance(exc, JobTimeoutException):
            error_type, message = "job_timeout", f"RQ's job timeout ({job.timeout} s) passed during the request"
        else:
            error_type, message = "worker_stopped", "the worker was stopped (cold shutdown) during the request"
        stopped = RequestRecord.failure(spec, process.name, process.host, error_type, message, clock.now())
        save_record(connection, stopped, ttl_s=spec.ttl_s)
        raise
    if send_at is not None:
        record.scheduled_at = send_at
        first_sent_at = record.started_at - record.retry_wait_ms / 1000
        record.dispatch_lag_ms = round((first_sent_at - send_at) * 1000, 3)
    save_record(connection, record, retry_s=SAVE_RETRY_S, ttl_s=spec.ttl_s)
