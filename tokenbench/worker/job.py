"""One job of a run, as a worker process's event loop runs it: warm-up, schedule, the measured request."""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import socket
import ssl
import time
from dataclasses import replace
from importlib.metadata import version
from urllib.parse import urlsplit

import aiohttp
from redis.asyncio import Redis

from tokenbench import __version__
from tokenbench.shared import keys
from tokenbench.shared.presets import PRESETS, api_key_from_env
from tokenbench.shared.records import NO_CONTEXT, JobSpec, RecordContext, RequestRecord
from tokenbench.worker import clock
from tokenbench.worker.measure import Answer, HeaderWaits, measure_request, worker_name
from tokenbench.worker.send_turns import SendTurns

# The clock offset is measured again when it is older than this, so drift over a long run stays small.
CLOCK_RESYNC_INTERVAL_S = 60.0
# How long a scheduled job waits for its run's schedule start before it is sent unscheduled.
SCHEDULE_START_TIMEOUT_S = 60.0
_SCHEDULE_POLL_S = 0.01
ALLOW_HOSTS_ENV = "TOKENBENCH_ALLOW_HOSTS"
# Where a worker sends its API key without being told: the presets' own hosts.
PRESET_HOSTS = frozenset(urlsplit(p.base_url).hostname or "" for p in PRESETS.values() if p.base_url) - {""}
log = logging.getLogger(__name__)


def allowed_hosts(extra: tuple[str, ...] = (), environ: dict[str, str] | None = None) -> frozenset[str]:
    """The hosts this worker sends its API key to: the presets', ``--allow-host``'s and
    TOKENBENCH_ALLOW_HOSTS' (comma-separated); a signed job's own host besides (see api_key_for)."""
    listed = (os.environ if environ is None else environ).get(ALLOW_HOSTS_ENV, "")
    return PRESET_HOSTS | {h.strip().lower() for h in (*extra, *listed.split(",")) if h.strip()}


def execute(spec_data: dict) -> None:
    """The function every tokenbench job names (``keys.JOB_FUNCTION``). `tokenbench worker` reads
    the job's arguments and never calls this; a plain `rq worker` that takes the job lands here."""
    raise RuntimeError("tokenbench jobs are run by `tokenbench worker`, not by `rq worker`")


def new_session(ssl_context: ssl.SSLContext | None) -> aiohttp.ClientSession:
    """One HTTP client for all of a process's streams: connections are kept and reused across jobs."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ssl=ssl_context or True, ttl_dns_cache=300,
                                     keepalive_timeout=60)
    # A compressed stream would be buffered by the decoder and hide chunk timing.
    return aiohttp.ClientSession(connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",),
                                 timeout=aiohttp.ClientTimeout(total=None), read_bufsize=2**16)


class WorkerProcess:
    """What one worker process keeps across its jobs: its HTTP client, clock offset, the runs it has
    registered in and warmed up for, and each open-loop run's schedule start."""

    def __init__(self, connection: Redis, session: aiohttp.ClientSession, streams: int,
                 secret: bytes | None = None, key_hosts: frozenset[str] = PRESET_HOSTS) -> None:
        self.connection = connection
        self.session = session
        self.streams = streams
        self.send_turns = SendTurns()  # many requests due at once go out two per turn of the loop
        self.secret = secret
        self.key_hosts = key_hosts
        self._hosts_warned: set[str] = set()
        self.name = worker_name()
        self.host = socket.gethostname()
        self.runs_seen: set[str] = set()  # runs this process has registered in (and warmed up for)
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

    def api_key_for(self, spec: JobSpec) -> str | None:
        """This host's API key for the job's mode, if the job may have it: its host is an allowed
        one, or the job was signed with this worker's secret (the producer chose the host). Whoever
        can write to the Redis cannot send a worker's key to a server of theirs."""
        api_key = api_key_from_env(spec.endpoint["mode"])
        if api_key is None:
            return None
        host = (urlsplit(spec.endpoint["base_url"]).hostname or "").lower()
        # With a secret, every job that reaches here was signed with it (stream_worker refuses others).
        if host in self.key_hosts or self.secret is not None:
            return api_key
        if host not in self._hosts_warned:
            self._hosts_warned.add(host)
            log.warning("not sending the API key to %s: not an allowed host (--allow-host %s, or "
                        "TOKENBENCH_ALLOW_HOSTS), and the job is not signed (TOKENBENCH_SECRET)", host, host)
        return None

    def warmup(self, spec: JobSpec) -> asyncio.Task[list[RequestRecord]]:
        """The run's warm-up in this process (started by its first job, awaited by all): ``spec.warmup``
        rounds of one request per stream, all streams at once, so every connection the streams will
        use is open and warm before the first measured request."""
        if spec.run_id not in self._warmups:
            self._warmups[spec.run_id] = asyncio.create_task(self._warm_up(spec))
        return self._warmups[spec.run_id]

    async def _warm_up(self, spec: JobSpec) -> list[RequestRecord]:
        api_key = self.api_key_for(spec)
        records: list[RequestRecord] = []
        for _ in range(spec.warmup):
            records += await asyncio.gather(*(measure_request(self.session, spec, api_key,
                                                              context=RecordContext(warmup=True),
                                                              turns=self.send_turns)
                                              for _ in range(self.streams)))
        return records

    def schedule_start(self, run_id: str) -> asyncio.Task[float | None]:
        if run_id not in self._schedule_starts:
            self._schedule_starts[run_id] = asyncio.create_task(wait_for_schedule_start(self.connection, run_id))
        return self._schedule_starts[run_id]


async def wait_for_schedule_start(connection: Redis, run_id: str,
                                  timeout_s: float = SCHEDULE_START_TIMEOUT_S) -> float | None:
    """The run's start (an open-loop schedule's, a ramp-up's, a duration's), waiting for the producer
    to write it (it does once every job is enqueued); None if it does not within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while (raw := await connection.get(keys.run_schedule_start(run_id))) is None:
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(_SCHEDULE_POLL_S)
    return float(raw)


class RunEnded(Exception):
    """The run's --duration is over: the job is not sent (producer/time_bounds.py)."""


async def run_end(process: WorkerProcess, spec: JobSpec) -> float | None:
    """When the run's --duration ends, on the Redis clock; None for a run without one."""
    if spec.duration_s is None:
        return None
    start = await asyncio.shield(process.schedule_start(spec.run_id))
    return None if start is None else start + spec.duration_s


async def run_job(process: WorkerProcess, spec: JobSpec, header_waits: HeaderWaits | None = None,
                  answer: Answer | None = None, context: RecordContext = NO_CONTEXT) -> RequestRecord:
    """Send the job's request (after the run's warm-up and, open loop or ramping up, when it is
    due); its record. RunEnded if it would go out after the run's duration."""
    api_key = process.api_key_for(spec)
    if spec.warmup:
        await asyncio.shield(process.warmup(spec))
    ends_at = await run_end(process, spec)
    send_at = None  # when the job is due, on the schedule or the ramp
    not_before = None  # nothing goes out before the run's start when it has one
    if spec.send_after_s is not None or ends_at is not None:
        start = await asyncio.shield(process.schedule_start(spec.run_id))
        if start is not None:
            not_before = start + (spec.send_after_s or 0.0)
            send_at = not_before if spec.send_after_s is not None else None
    if ends_at is not None and max(not_before or 0.0, clock.now()) >= ends_at:
        raise RunEnded
    if not_before is not None:
        remaining = not_before - clock.now()
        if remaining > 0:
            await asyncio.sleep(remaining)
    return await measure_request(process.session, spec, api_key, header_waits, answer,
                                 context if send_at is None else replace(context, scheduled_at=send_at),
                                 process.send_turns)
