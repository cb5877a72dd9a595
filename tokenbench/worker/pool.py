"""Start N worker processes on this host, each running its share of the streams (see stream_worker.py).

The pool imports everything and loads the CA bundle once, then forks: 2 x 256 streams start as
fast as one. It forwards stop signals to its processes (first: warm shutdown, second: cold),
replaces a process that crashed, and gives up with one line when they keep crashing (e.g. Redis
is gone or read-only) instead of respawning them for ever.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import ssl
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.context import ForkProcess

import redis

from tokenbench.shared.errors import TokenbenchError
from tokenbench.shared.lifetime import die_with_parent
from tokenbench.shared.redis_conn import connect, connect_async, redact_url
from tokenbench.shared.signing import SECRET_ENV, secret_from_env
from tokenbench.worker.capacity import raise_open_file_limit
from tokenbench.worker.job import allowed_hosts
from tokenbench.worker.stream_worker import StreamWorker

log = logging.getLogger(__name__)
_fork = multiprocessing.get_context("fork")
CRASH_WINDOW_S = 60.0
CHECK_INTERVAL_S = 0.2


def split_streams(total: int, processes: int) -> list[int]:
    """``total`` streams over at most ``processes`` processes, as evenly as they go (none empty)."""
    processes = max(1, min(processes, total))
    share, extra = divmod(total, processes)
    return [share + (1 if i < extra else 0) for i in range(processes)]


def run_workers(redis_url: str, queue_names: list[str], streams: list[int], *, burst: bool,
                logging_level: str = "INFO", allow_hosts: tuple[str, ...] = ()) -> int:
    """One process per entry of ``streams`` (its stream count) until stopped or, with ``burst``, until
    the queues are empty; the exit status (0, or 1 when the processes kept crashing)."""
    check_writable(connect(redis_url, "worker-pool"), redis_url)  # one line now rather than N crashes later
    raise_open_file_limit(max(streams))
    logging.basicConfig(level=logging_level, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    ssl_context = ssl.create_default_context()  # ~50 ms of CPU: once here, inherited by every process
    security = WorkerSecurity(secret_from_env(), allowed_hosts(allow_hosts))
    if security.secret is None:
        log.warning("tokenbench worker: no %s: its processes run unsigned jobs, so anyone who can write to this "
                    "Redis can direct them (their API key goes only to %s)", SECRET_ENV,
                    ", ".join(sorted(security.key_hosts)))
    # Everything imported so far leaves the collector's sight before the fork: no process then spends
    # ~50-100 ms of CPU (and copy-on-write faults) collecting it at start, beside one already streaming.
    gc.collect()
    gc.freeze()
    pool = _Pool(redis_url, queue_names, ssl_context, security, burst, logging_level)
    return pool.run(streams)


@dataclass(frozen=True)
class WorkerSecurity:
    secret: bytes | None  # TOKENBENCH_SECRET: only jobs signed with it run
    key_hosts: frozenset[str]  # where the API key may go


def check_writable(connection: redis.Redis, url: str) -> None:
    """A replica cannot take the workers' writes: say so once, before any process starts."""
    try:
        role = connection.info("replication").get("role")
    finally:
        connection.close()
    if role == "slave":
        raise TokenbenchError(f"Redis at {redact_url(url)} is a read-only replica: point the workers at its primary")


class _Pool:
    def __init__(self, redis_url: str, queue_names: list[str], ssl_context: ssl.SSLContext,
                 security: WorkerSecurity, burst: bool, logging_level: str) -> None:
        self._args = (redis_url, queue_names, ssl_context, security, burst, logging_level)
        self._burst = burst
        self._processes: dict[int, tuple[ForkProcess, int]] = {}  # slot -> (process, its streams)
        self._stopping = False
        self._gave_up = False
        self._crashes: list[float] = []

    def run(self, streams: list[int]) -> int:
        for slot, count in enumerate(streams):
            self._start(slot, count)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        while self._processes:
            # Until a process ends (its sentinel), or the interval passes: a stop ends as soon as they do.
            wait([process.sentinel for process, _count in self._processes.values()], CHECK_INTERVAL_S)
            for slot, (process, count) in list(self._processes.items()):
                if process.is_alive():
                    continue
                process.join()
                del self._processes[slot]
                if process.exitcode != 0 and not self._stopping and not self._burst:
                    if self._crashed_too_often(len(streams)):
                        log.error("tokenbench worker: its processes keep failing (%d in %g s); stopping",
                                  len(self._crashes), CRASH_WINDOW_S)
                        self._signal_all(signal.SIGTERM)
                        self._stopping = self._gave_up = True
                        continue
                    self._start(slot, count)
        return 1 if self._gave_up else 0

    def _crashed_too_often(self, processes: int) -> bool:
        moment = time.monotonic()
        self._crashes = [t for t in self._crashes if moment - t < CRASH_WINDOW_S] + [moment]
        return len(self._crashes) > 2 * processes

    def _start(self, slot: int, streams: int) -> None:
        process = _fork.Process(target=_serve, args=(*self._args, streams), name=f"tokenbench-worker-{slot}",
                                daemon=False)
        process.start()
        self._processes[slot] = (process, streams)

    def _on_signal(self, signum: int, _frame: object) -> None:
        """Each stop signal goes to every process: the first is their warm shutdown, a second their cold one."""
        self._stopping = True
        self._signal_all(signal.SIGTERM)

    def _signal_all(self, sig: int) -> None:
        for process, _count in self._processes.values():
            if process.pid is not None:
                try:
                    os.kill(process.pid, sig)
                except ProcessLookupError:
                    pass


def _serve(redis_url: str, queue_names: list[str], ssl_context: ssl.SSLContext, security: WorkerSecurity,
           burst: bool, logging_level: str, streams: int) -> None:
    """A worker process's body: its own Redis connections, then the StreamWorker until it stops."""
    die_with_parent()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        worker = StreamWorker(queue_names, connection=connect(redis_url, "worker"),
                              async_connection=connect_async(redis_url, "worker"), streams=streams,
                              ssl_context=ssl_context, secret=security.secret, key_hosts=security.key_hosts)
        worker.work(burst=burst, logging_level=logging_level)
        if worker.gave_up:
            sys.exit(1)
    except TokenbenchError as exc:
        print(f"tokenbench worker: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        # Redis went away while the process started (its clock sync, its registration): once it
        # serves, the worker waits out an outage itself; until then it stops as a failed connect does.
        print(f"tokenbench worker: error: Redis went away as the worker process started: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        pass
