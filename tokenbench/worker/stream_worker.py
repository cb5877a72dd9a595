"""The worker process: an RQ worker that runs up to K jobs at once, each a stream on one event loop.

Jobs are ordinary RQ jobs: taken from the queue into RQ's intermediate queue (LMOVE), marked
started in RQ's StartedJobRegistry with an execution of this worker, deleted when done (their
result is the record the job stores) and moved to RQ's FailedJobRegistry when refused or
interrupted. What RQ's own worker does for a job in ~78 commands over a dozen round trips is
batched here into three: fetch the job, start it (with the run's in-flight mark), finish it (with
its record). `rq info` and rq-dashboard show the workers, queues and registries as usual.

A worker runs only tokenbench's jobs: a job that names any other function is refused before
anything is imported or called, and recorded in the FailedJobRegistry with the reason.
"""

from __future__ import annotations

import asyncio
import gc
import heapq
import logging
import signal
import ssl
import time

import redis
from redis.asyncio import Redis
from rq.executions import Execution
from rq.job import Job
from rq.job_lifecycle import record_job_failure
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.utils import now, utcformat
from rq.worker import BaseWorker, WorkerStatus

from tokenbench.shared import keys
from tokenbench.shared.record_store import (
    InFlight,
    clear_in_flight,
    queue_mark_in_flight,
    queue_register_worker,
    queue_save_record,
    queue_save_warmup_records,
)
from tokenbench.shared.records import JobSpec, RequestRecord
from tokenbench.worker import clock
from tokenbench.worker.job import WorkerProcess, new_session, run_job
from tokenbench.worker.loop_lag import LoopLagMonitor

log = logging.getLogger(__name__)

# How long a worker keeps trying to store a finished record while Redis is away (e.g. restarting).
SAVE_RETRY_S = 60.0
_RETRY_PAUSE_S = 0.5
DEQUEUE_BLOCK_S = 1  # a blocking dequeue waits this long, then the loop looks at its state again
_MULTI_QUEUE_POLL_S = 0.05  # several queues cannot be waited on at once with a move: they are polled
# A second stop signal this soon after the first is the same stop reaching us twice (the pool
# forwards the terminal's Ctrl-C, which reached us too), not a request for a cold shutdown.
_DUPLICATE_SIGNAL_S = 1.0


class StreamWorker(BaseWorker):
    """Runs up to ``streams`` jobs of its queues at once on an asyncio event loop, one stream each."""

    def __init__(self, queues: list[str], *, connection: redis.Redis, async_connection: Redis, streams: int,
                 ssl_context: ssl.SSLContext | None = None, **kwargs) -> None:
        super().__init__(queues, connection=connection, serializer=JSONSerializer, **kwargs)
        self.streams = streams
        self._aredis = async_connection
        self._ssl_context = ssl_context
        self._free_streams = list(range(streams))  # a heap: a job takes the lowest free stream
        self._tasks: set[asyncio.Task[None]] = set()
        self._stream_freed = asyncio.Event()
        self._stop_signalled_at: float | None = None
        self._loop_lag = LoopLagMonitor()
        self._process: WorkerProcess | None = None

    def execute_job(self, job: Job, queue: Queue) -> None:  # RQ's one-job-at-a-time entry; not ours
        raise NotImplementedError("StreamWorker runs its jobs on its event loop (work())")

    def work(self, burst: bool = False, logging_level: str = "INFO", **_options) -> bool:
        """Serve the queues until stopped (SIGTERM/SIGINT) or, with ``burst``, until they are empty."""
        self.bootstrap(logging_level)
        try:
            return asyncio.run(self._serve(burst))
        finally:
            self.teardown()

    async def _serve(self, burst: bool) -> bool:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal)
        session = new_session(self._ssl_context, self.streams)
        self._process = WorkerProcess(self._aredis, session, self.streams)
        await self._process.keep_clock_fresh()
        await self._beat()
        # Every object alive so far moves out of the garbage collector's sight: a full collection
        # over the imported modules takes ~100 ms on a small machine, and one landing inside a
        # stream would be measured as the server's latency.
        gc.collect()
        gc.freeze()
        background = [asyncio.create_task(self._loop_lag.run()), asyncio.create_task(self._keep_beating())]
        worked = False
        try:
            worked = await self._feed(burst)
            if self._tasks:
                await asyncio.wait(self._tasks)
        finally:
            for task in background:
                task.cancel()
            await self._save_loop_lag()
            await session.close()
            await self._aredis.aclose()
        return worked

    # -- taking jobs -------------------------------------------------------------------------

    async def _feed(self, burst: bool) -> bool:
        """Start a job on every free stream while there are jobs; False if none was ever taken."""
        worked = False
        while self._stop_signalled_at is None:
            if not self._free_streams:
                self._stream_freed.clear()
                await self._stream_freed.wait()
                continue
            taken = await self._dequeue(len(self._free_streams), block=not burst)
            if self._stop_signalled_at is not None:
                await self._give_back(taken)
                break
            if not taken:
                if burst and not self._tasks:
                    break
                if burst:
                    self._stream_freed.clear()
                    await self._stream_freed.wait()
                continue
            worked = True
            for job_id, queue in taken:
                stream = heapq.heappop(self._free_streams)
                task = asyncio.create_task(self._perform(job_id, queue, stream))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return worked

    async def _dequeue(self, count: int, block: bool) -> list[tuple[str, Queue]]:
        """Up to ``count`` job ids, each moved into its queue's intermediate queue (RQ's way, so that
        a job taken by a process that dies before starting it is not forgotten)."""
        taken: list[tuple[str, Queue]] = []
        try:
            for queue in self.queues:
                async with self._aredis.pipeline(transaction=False) as pipe:
                    for _ in range(count - len(taken)):
                        pipe.lmove(queue.key, queue.intermediate_queue_key)
                    taken += [(job_id.decode(), queue) for job_id in await pipe.execute() if job_id is not None]
                if len(taken) == count:
                    return taken
            if taken or not block:
                return taken
            if len(self.queues) > 1:
                await asyncio.sleep(_MULTI_QUEUE_POLL_S)
                return []
            queue = self.queues[0]
            job_id = await self._aredis.blmove(queue.key, queue.intermediate_queue_key, DEQUEUE_BLOCK_S)
            return [] if job_id is None else [(job_id.decode(), queue)]
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("worker %s: Redis unreachable (%s); retrying", self.name, exc)
            await asyncio.sleep(_RETRY_PAUSE_S)
            return taken

    async def _give_back(self, taken: list[tuple[str, Queue]]) -> None:
        """Jobs taken as a stop came: back to the front of their queues, in order."""
        if taken:
            async with self._aredis.pipeline(transaction=True) as pipe:
                for job_id, queue in reversed(taken):
                    pipe.lrem(queue.intermediate_queue_key, 1, job_id)
                    pipe.lpush(queue.key, job_id)
                await pipe.execute()

    # -- one job -----------------------------------------------------------------------------

    async def _perform(self, job_id: str, queue: Queue, stream: int) -> None:
        try:
            await self._perform_job(job_id, queue, stream)
        except Exception:  # a bug, or Redis gone for good: the job's record is missing, and says so
            log.exception("worker %s: job %s failed", self.name, job_id)
        finally:
            heapq.heappush(self._free_streams, stream)
            self._stream_freed.set()

    async def _perform_job(self, job_id: str, queue: Queue, stream: int) -> None:
        assert self._process is not None
        job = Job(job_id, connection=self.connection, serializer=JSONSerializer)
        raw = await self._aredis.hgetall(job.key)
        if not raw:  # deleted meanwhile (a cancelled run's jobs are)
            await self._aredis.lrem(queue.intermediate_queue_key, 1, job_id)
            return
        job.restore(raw)
        refusal = refusal_reason(job)
        if refusal is not None:
            log.warning("worker %s: refused job %s: %s", self.name, job_id, refusal)
            await asyncio.to_thread(self._fail_in_rq, job, queue, None, f"refused by tokenbench worker: {refusal}")
            return
        spec = JobSpec.from_dict(job.args[0])
        first_of_run = self._process.first_job_of(spec.run_id)
        execution = await self._start(job, queue, spec, first_of_run)
        if execution is None:
            return  # the run was cancelled while this job waited on the queue
        self._loop_lag.job_started(spec.run_id)
        warmups: list[RequestRecord] = []
        try:
            async with asyncio.timeout(job.timeout if job.timeout and job.timeout > 0 else None):
                record = await run_job(self._process, spec)
            if first_of_run and spec.warmup:
                warmups = self._process.warmup(spec).result()
        except TimeoutError:
            record = self._interrupted(spec, "job_timeout", f"RQ's job timeout ({job.timeout} s) passed")
        except asyncio.CancelledError:
            record = self._interrupted(spec, "worker_stopped", "the worker was stopped (cold shutdown) "
                                                                "during the request")
            await self._finish(job, queue, execution, spec, record, [], failed=True)
            raise
        finally:
            self._loop_lag.job_ended(spec.run_id)
        record.stream = stream
        await self._finish(job, queue, execution, spec, record, warmups, failed=record.error_type == "job_timeout")
        log.info("worker %s: %s #%d %s", self.name, spec.run_id, spec.index,
                 "ok" if record.success else record.error_type)

    def _interrupted(self, spec: JobSpec, error_type: str, message: str) -> RequestRecord:
        assert self._process is not None
        return RequestRecord.failure(spec, self._process.name, self._process.host, error_type, message, clock.now())

    async def _start(self, job: Job, queue: Queue, spec: JobSpec, first_of_run: bool) -> Execution | None:
        """One round trip: the run's in-flight mark (unless it was cancelled) and RQ's started state."""
        assert self._process is not None
        process = self._process
        ttl = self.get_heartbeat_ttl(job)
        async with self._aredis.pipeline(transaction=True) as pipe:
            queue_mark_in_flight(pipe, spec.run_id, InFlight(spec.index, process.name, spec.attempt, job.id),
                                 spec.ttl_s)
            execution = Execution.create(job, ttl, pipeline=pipe, worker_name=self.name)
            job.prepare_for_execution(self.name, pipeline=pipe)
            pipe.lrem(queue.intermediate_queue_key, 1, job.id)
            if first_of_run:
                queue_register_worker(pipe, spec.run_id, process.name, process.environment(), spec.ttl_s)
            cancelled = (await pipe.execute())[0]
        if cancelled:
            async with self._aredis.pipeline(transaction=False) as pipe:
                clear_in_flight(pipe, spec.run_id, spec.index)
                execution.delete(job, pipeline=pipe)
                pipe.delete(job.key)
                await pipe.execute()
            return None
        return execution

    async def _finish(self, job: Job, queue: Queue, execution: Execution, spec: JobSpec, record: RequestRecord,
                      warmups: list[RequestRecord], failed: bool) -> None:
        """One round trip: the record (stored once, counted once) and RQ's end of the job. While Redis
        is away the record is kept and retried for ``SAVE_RETRY_S``."""
        deadline = time.monotonic() + SAVE_RETRY_S
        while True:
            try:
                async with self._aredis.pipeline(transaction=False) as pipe:
                    queue_save_record(pipe, record, spec.ttl_s)
                    if warmups:
                        queue_save_warmup_records(pipe, warmups, spec.ttl_s)
                    execution.delete(job, pipeline=pipe)
                    if not failed:
                        pipe.delete(job.key)  # result_ttl 0: the record is the job's result
                        self.increment_successful_job_count(pipeline=pipe)
                    await pipe.execute()
                break
            except (redis.ConnectionError, redis.TimeoutError):
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(_RETRY_PAUSE_S)
        if failed:
            await asyncio.to_thread(self._fail_in_rq, job, queue, execution, record.error or "")

    def _fail_in_rq(self, job: Job, queue: Queue, execution: Execution | None, reason: str) -> None:
        """RQ's failed state for the job, in its FailedJobRegistry (rare: refused or interrupted jobs)."""
        with self.connection.pipeline() as pipe:
            record_job_failure(job, reason, pipe)  # failed status, FailedJobRegistry, a failure Result
            pipe.lrem(queue.intermediate_queue_key, 1, job.id)
            if execution is not None:
                execution.delete(job, pipeline=pipe)
            self.increment_failed_job_count(pipeline=pipe)
            pipe.execute()

    # -- liveness, stop ----------------------------------------------------------------------

    async def _keep_beating(self) -> None:
        """Every second: the liveness key the aggregator watches, RQ's worker heartbeat, the loop-lag
        histograms of the runs in progress; every minute, the clock offset."""
        assert self._process is not None
        while True:
            await asyncio.sleep(keys.HEARTBEAT_INTERVAL_S)
            try:
                await self._beat()
                await self._save_loop_lag()
                await self._process.keep_clock_fresh()
            except (redis.ConnectionError, redis.TimeoutError) as exc:  # Redis away: try again next beat
                log.warning("worker %s: heartbeat failed: %s", self.name, exc)

    async def _beat(self) -> None:
        assert self._process is not None
        ttl = self.worker_ttl + 60
        async with self._aredis.pipeline(transaction=False) as pipe:
            pipe.set(keys.worker_alive(self._process.name), 1, ex=keys.WORKER_ALIVE_TTL_S)
            pipe.hset(self.key, mapping={"last_heartbeat": utcformat(now()),
                                         "state": WorkerStatus.BUSY if self._tasks else WorkerStatus.IDLE})
            pipe.expire(self.key, ttl)
            pipe.expire(self.executions_key, ttl)
            await pipe.execute()

    async def _save_loop_lag(self) -> None:
        assert self._process is not None
        histograms = self._loop_lag.unsaved()
        if histograms:
            async with self._aredis.pipeline(transaction=False) as pipe:
                for run_id, histogram in histograms.items():
                    pipe.hset(keys.run_loop_lag(run_id), self._process.name, histogram)
                    pipe.expire(keys.run_loop_lag(run_id), keys.RUN_TTL_S)
                await pipe.execute()

    def _on_stop_signal(self) -> None:
        """First signal: a warm shutdown (take no more jobs, finish those in flight). A second, later
        one: a cold shutdown (every request in flight ends now with a ``worker_stopped`` record)."""
        moment = time.monotonic()
        if self._stop_signalled_at is None:
            log.info("worker %s: warm shutdown: finishing %d request(s) in flight", self.name, len(self._tasks))
            self._stop_signalled_at = moment
            self._stream_freed.set()
        elif moment - self._stop_signalled_at > _DUPLICATE_SIGNAL_S:
            log.warning("worker %s: cold shutdown", self.name)
            for task in self._tasks:
                task.cancel()


def refusal_reason(job: Job) -> str | None:
    """Why a job is not one of ours (None when it is), read from its data without importing anything."""
    try:
        func_name, args, kwargs = job.func_name, job.args, job.kwargs
    except Exception as exc:  # undecodable data
        return f"its data cannot be read ({type(exc).__name__})"
    if func_name != keys.JOB_FUNCTION:
        return f"it calls {func_name!r}, not {keys.JOB_FUNCTION!r}"
    if kwargs or len(args) != 1 or not isinstance(args[0], dict):
        return "its arguments are not one job spec"
    try:
        JobSpec.from_dict(args[0])
    except TypeError as exc:
        return f"its job spec is incomplete ({exc})"
    return None

