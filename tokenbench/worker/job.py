"""One job of a run, as a worker process's event loop runs it: warm-up, schedule, the measured request."""

from __future__ import annotations

import asyncio
import platform
import socket
import ssl
import time
from importlib.metadata import version

import aiohttp
from redis.asyncio import Redis

from tokenbench import __version__
from tokenbench.shared import keys
from tokenbench.shared.config import api_key_from_env
from tokenbench.shared.records import JobSpec, RequestRecord
from tokenbench.worker import clock
from tokenbench.worker.measure import measure_request, worker_name

# The clock offset is measured again when it is older than this, so drift over a long run stays small.
CLOCK_RESYNC_INTERVAL_S = 60.0
# How long a scheduled job waits for its run's schedule start before it is sent unscheduled.
SCHEDULE_START_TIMEOUT_S = 60.0
_SCHEDULE_POLL_S = 0.01


def execute(spec_data: dict) -> None:
    """The function every tokenbench job names (``keys.JOB_FUNCTION``). `tokenbench worker` reads
    the job's arguments and never calls this; a plain `rq worker` that takes the job lands here."""
    raise RuntimeError("tokenbench jobs are run by `tokenbench worker`, not by `rq worker`")


def new_session(ssl_context: ssl.SSLContext | None, streams: int) -> aiohttp.ClientSession:
    """One HTTP client for all of a process's streams: connections are kept and reused across jobs."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ssl=ssl_context or True, ttl_dns_cache=300,
                                     keepalive_timeout=60)
    # A compressed stream would be buffered by the decoder and hide chunk timing.
    return aiohttp.ClientSession(connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",),
                                 timeout=aiohttp.ClientTimeout(total=None), read_bufsize=2**16)


class WorkerProcess:
    """What one worker process keeps across its jobs: its HTTP client, clock offset, the runs it has
    registered in and warmed up for, and each open-loop run's schedule start."""

    def __init__(self, connection: Redis, session: aiohttp.ClientSession, streams: int) -> None:
        self.connection = connection
        self.session = session
        self.streams = streams
        self.name = worker_name()
        self.host = socket.gethostname()
        self.runs_seen: set[str] = set()
        self._warmups: dict[str, asyncio.Task[list[RequestRecord]]] = {}
        self._schedule_starts: dict[str, asyncio.Task[float | None]] = {}
        self._synchronized_at = float("-inf")
        # What a result needs to explain itself later: where and on what this worker ran. Made now,
        # not at a run's first job: platform() and the package metadata take tens of ms.
        self.environment: dict[str, str | int] = {
            "host": self.host, "python": platform.python_version(), "implementation": platform.python_implementation(),
            "platform": platform.platform(), "tokenbench": __version__, "rq": version("rq"),
            "aiohttp": aiohttp.__version__, "streams": streams}

    async def keep_clock_fresh(self) -> None:
        if time.monotonic() - self._synchronized_at >= CLOCK_RESYNC_INTERVAL_S:
            await clock.synchronize(self.connection)
            self._synchronized_at = time.monotonic()

    def first_job_of(self, run_id: str) -> bool:
        """True once per run: the first of its jobs this process takes."""
        if run_id in self.runs_seen:
            return False
        self.runs_seen.add(run_id)
        return True

    def warmup(self, spec: JobSpec) -> asyncio.Task[list[RequestRecord]]:
        """The run's warm-up in this process (started by its first job, awaited by all): ``spec.warmup``
        rounds of one request per stream, all streams at once, so every connection the streams will
        use is open and warm before the first measured request."""
        if spec.run_id not in self._warmups:
            self._warmups[spec.run_id] = asyncio.create_task(self._warm_up(spec))
        return self._warmups[spec.run_id]

    async def _warm_up(self, spec: JobSpec) -> list[RequestRecord]:
        api_key = api_key_from_env(spec.endpoint["mode"])
        records: list[RequestRecord] = []
        for _ in range(spec.warmup):
            records += await asyncio.gather(*(measure_request(self.session, spec, api_key)
                                              for _ in range(self.streams)))
        for record in records:
            record.warmup = True
        return records

    def schedule_start(self, run_id: str) -> asyncio.Task[float | None]:
        if run_id not in self._schedule_starts:
            self._schedule_starts[run_id] = asyncio.create_task(wait_for_schedule_start(self.connection, run_id))
        return self._schedule_starts[run_id]


async def wait_for_schedule_start(connection: Redis, run_id: str,
                                  timeout_s: float = SCHEDULE_START_TIMEOUT_S) -> float | None:
    """The open-loop schedule's start, waiting for the producer to write it (it does once every job is
    enqueued); None if it does not within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while (raw := await connection.get(keys.run_schedule_start(run_id))) is None:
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(_SCHEDULE_POLL_S)
    return float(raw)


async def run_job(process: WorkerProcess, spec: JobSpec) -> RequestRecord:
    """Send the job's request (after the run's warm-up and, open loop, when it is due); its record."""
    api_key = api_key_from_env(spec.endpoint["mode"])
    if spec.warmup:
        await asyncio.shield(process.warmup(spec))
    send_at = None
    if spec.send_after_s is not None:
        start = await asyncio.shield(process.schedule_start(spec.run_id))
        if start is not None:
            send_at = start + spec.send_after_s
            remaining = send_at - clock.now()
            if remaining > 0:
                await asyncio.sleep(remaining)
    record = await measure_request(process.session, spec, api_key)
    if send_at is not None:
        record.scheduled_at = send_at
        first_sent_at = record.started_at - record.retry_wait_ms / 1000
        record.dispatch_lag_ms = round((first_sent_at - send_at) * 1000, 3)
    return record
