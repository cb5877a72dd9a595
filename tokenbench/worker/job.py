"""The RQ job: one prompt, one streamed request, one record pushed to the run."""

from __future__ import annotations

import gc
import os
import socket
import ssl

import httpx
from rq import get_current_job
from rq.timeouts import JobTimeoutException

from tokenbench.shared.config import api_key_from_env
from tokenbench.shared.record_store import SAVE_RETRY_S, InFlight, mark_in_flight, save_record, save_warmup_record
from tokenbench.shared.records import JobSpec, RequestRecord
from tokenbench.worker import clock
from tokenbench.worker.heartbeat import Heartbeat
from tokenbench.worker.measure import measure_request, worker_name
from tokenbench.worker.watchdog import StreamWatchdog

_client: httpx.Client | None = None
_watchdog: StreamWatchdog | None = None
_owner_pid: int | None = None
_heartbeat: Heartbeat | None = None
_ssl_context: ssl.SSLContext | None = None
_warmed_up_runs: set[str] = set()  # runs for which this process has sent its warm-up requests


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


def process_tools() -> tuple[httpx.Client, StreamWatchdog]:
    """This process's HTTP client and watchdog: connections are reused across jobs, never across a fork.

    The first call also moves every object alive so far out of the garbage collector's sight: a
    full collection over the imported modules takes ~100 ms on a small machine, and one landing
    inside a stream would be measured as the server's latency.
    """
    global _client, _watchdog, _owner_pid
    if _client is None or _watchdog is None or _owner_pid != os.getpid():
        _client = httpx.Client(
            verify=_ssl_context or httpx.create_ssl_context(),
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=16),
        )
        _watchdog = StreamWatchdog()
        _owner_pid = os.getpid()
        gc.collect()
        gc.freeze()
    return _client, _watchdog


def execute(spec_data: dict) -> None:
    """RQ entry point (``tokenbench.worker.job.execute``)."""
    global _heartbeat
    spec = JobSpec.from_dict(spec_data)
    job = get_current_job()
    connection = job.connection
    worker = worker_name()
    if _heartbeat is None:
        _heartbeat = Heartbeat(connection, worker)
        clock.synchronize(connection)
    if not mark_in_flight(connection, spec.run_id, InFlight(spec.index, worker, spec.attempt, job.id), spec.ttl_s):
        return  # the run was cancelled while this job waited on the queue
    client, watchdog = process_tools()
    api_key = api_key_from_env(spec.endpoint["mode"])
    try:
        if spec.warmup and spec.run_id not in _warmed_up_runs:
            _warmed_up_runs.add(spec.run_id)
            for _ in range(spec.warmup):
                warmup = measure_request(client, spec, api_key, watchdog)
                warmup.warmup = True
                save_warmup_record(connection, warmup, spec.ttl_s)
        record = measure_request(client, spec, api_key, watchdog)
    except BaseException as exc:  # RQ interrupted the request: a cold shutdown, or its job timeout
        if isinstance(exc, JobTimeoutException):
            error_type, message = "job_timeout", f"RQ's job timeout ({job.timeout} s) passed during the request"
        else:
            error_type, message = "worker_stopped", "the worker was stopped (cold shutdown) during the request"
        stopped = RequestRecord.failure(spec, worker, socket.gethostname(), error_type, message, clock.now())
        save_record(connection, stopped, ttl_s=spec.ttl_s)
        raise
    save_record(connection, record, retry_s=SAVE_RETRY_S, ttl_s=spec.ttl_s)
