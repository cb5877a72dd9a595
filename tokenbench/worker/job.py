"""The RQ job: one prompt, one streamed request, one record pushed to the run."""

from __future__ import annotations

import gc
import os

import httpx
import redis
from rq import get_current_job

from tokenbench.shared import keys
from tokenbench.shared.config import api_key_from_env
from tokenbench.shared.records import JobSpec, RequestRecord
from tokenbench.worker.measure import measure_request
from tokenbench.worker.watchdog import StreamWatchdog

_client: httpx.Client | None = None
_watchdog: StreamWatchdog | None = None
_owner_pid: int | None = None


def process_tools() -> tuple[httpx.Client, StreamWatchdog]:
    """This process's HTTP client and watchdog: connections are reused across jobs, never across a fork.

    The first call also moves every object alive so far out of the garbage collector's sight: a
    full collection over the imported modules takes ~100 ms on a small machine, and one landing
    inside a stream would be measured as the server's latency.
    """
    global _client, _watchdog, _owner_pid
    if _client is None or _watchdog is None or _owner_pid != os.getpid():
        _client = httpx.Client(limits=httpx.Limits(max_connections=16, max_keepalive_connections=16))
        _watchdog = StreamWatchdog()
        _owner_pid = os.getpid()
        gc.collect()
        gc.freeze()
    return _client, _watchdog


def save_record(connection: redis.Redis, record: RequestRecord) -> bool:
    """Store the record under its job index; a second push for the same job is ignored.

    Returns whether this push stored it. The progress counters move only for the stored one.
    """
    records_key = keys.run_records(record.run_id)
    if not connection.hsetnx(records_key, str(record.index), record.to_json()):
        return False
    progress_key = keys.run_progress(record.run_id)
    with connection.pipeline(transaction=False) as pipe:
        pipe.expire(records_key, keys.RUN_TTL_S)
        pipe.hincrby(progress_key, "done", 1)
        pipe.hincrby(progress_key, "failed", 0 if record.success else 1)
        pipe.hincrby(progress_key, "output_tokens", record.output_tokens if record.success else 0)
        pipe.expire(progress_key, keys.RUN_TTL_S)
        pipe.execute()
    return True


def execute(spec_data: dict) -> None:
    """RQ entry point (``tokenbench.worker.job.execute``)."""
    spec = JobSpec.from_dict(spec_data)
    api_key = api_key_from_env(spec.endpoint["mode"])
    client, watchdog = process_tools()
    record = measure_request(client, spec, api_key, watchdog)
    save_record(get_current_job().connection, record)
