"""The worker process: an RQ worker that runs up to K jobs at once, each a stream on one event loop.

Jobs are ordinary RQ jobs: taken from the queue into RQ's intermediate queue (LMOVE), marked
started in RQ's StartedJobRegistry with an execution of this worker, deleted when done (their
result is the record the job stores) and moved to RQ's FailedJobRegistry when refused or
interrupted. What RQ's own worker does for a job in ~78 commands over a dozen round trips is
batched here into three scripts for a batch of jobs: fetch them, start them (with the run's
in-flight marks), finish them (with their records); the start and the end make RQ's changes
without RQ's Python objects (rq_jobs.py). `rq info` and rq-dashboard show the workers, queues and
registries as usual, and a running job's execution is renewed as RQ's worker renews it.

A few jobs are started ahead (marked in flight as unsent) while the queue is long, so that a stream
that ends sends its next request with no round trip to Redis between; a stopping worker gives them
back to the queue, a dead one's are sent by another worker (docs/failure-semantics.md).

A worker runs only tokenbench's jobs: a job that names any other function, or (with
TOKENBENCH_SECRET) one not signed with the secret, is refused before anything is imported or
called, and recorded in the FailedJobRegistry with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import logging
import signal
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, cast

import redis
from redis.asyncio import Redis
from rq.job import Job
from rq.job_lifecycle import record_job_failure
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.utils import now, utcformat
from rq.worker import BaseWorker, WorkerStatus
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from tokenbench.shared import keys
from tokenbench.shared.record_store import (
    InFlight,
    drop_queued_jobs,
    in_flight_words,
    no_record_words,
    queue_note_sent,
    queue_register_worker,
    queue_save_warmup_records,
    save_record_words,
)
from tokenbench.shared.records import ErrorType, JobSpec, RecordContext, RequestRecord
from tokenbench.shared.signing import SECRET_ENV, is_signed_by
from tokenbench.shared.terminal import terminal_safe
from tokenbench.worker import clock
from tokenbench.worker.conversation import Conversation
from tokenbench.worker.job import PRESET_HOSTS, RunEnded, WorkerProcess, new_session, run_job
from tokenbench.worker.loop_lag import LoopLagMonitor
from tokenbench.worker.measure import HeaderWaits
from tokenbench.worker.queue_wait import QueueWait
from tokenbench.worker.rq_jobs import JobBook, RQJob

log = logging.getLogger(__name__)

# How long a worker keeps trying to store finished records while Redis is away (restarting, a network
# cut): a measurement is worth keeping through an outage longer than any restart; its stream
# waits meanwhile (no job can be taken either).
SAVE_RETRY_S = 900.0
_RETRY_PAUSE_S = 0.5
_MAX_RETRY_PAUSE_S = 8.0
REDIS_GONE_S = 300.0  # a worker with nothing in flight stops after Redis has been away this long
DEQUEUE_BLOCK_S = 1  # a blocking dequeue waits this long, then the loop looks at its state again
_MULTI_QUEUE_POLL_S = 0.05  # several queues cannot be waited on at once with a move: they are polled
# Jobs started or saved in one round trip at most. A batch is Python work on the event loop (~0.1 ms
# a job: RQ's job hash, the record): 256 streams ending at once in one batch held the loop for
# ~25 ms, late chunk times for every other stream; batches of 32 interleave with their reads.
_BATCH = 32
_SAVE_DELAY_S = 0.005
_STOP_TRIES, _STOP_WAIT_S = 3, 1.0  # how a stopping worker ends its background tasks (stop_tasks)
_INTERRUPTIONS = (ErrorType.JOB_TIMEOUT, ErrorType.WORKER_STOPPED)  # a job that ends so failed in RQ's terms
# Moves up to ARGV[1] job ids from a queue into its intermediate queue and returns each with its
# hash (id, fields, id, fields, ...): taking a batch of jobs is one round trip. A job whose hash is
# gone (deleted while queued) leaves the intermediate queue again at once. Then up to ARGV[3] more,
# to start ahead, but only while more jobs stay queued than the queue's workers have streams
# (ARGV[4]: RQ's set of them; ours give their streams in their hash, RQ's own run one job): held
# near a run's end, they would run a round late while other streams found the queue empty.
_TAKE_JOBS_SCRIPT = """
local taken = {}
local function take()
  local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  if not id then return false end
  local fields = redis.call('HGETALL', ARGV[2] .. id)
  if #fields == 0 then
    redis.call('LREM', KEYS[2], 1, id)
  else
    taken[#taken + 1] = id
    taken[#taken + 1] = fields
  end
  return true
end
for _ = 1, tonumber(ARGV[1]) do
  if not take() then return taken end
end
local ahead = tonumber(ARGV[3])
if ahead > 0 then
  local streams = 0
  for _, worker in ipairs(redis.call('SMEMBERS', ARGV[4])) do
    local count = redis.call('HGET', worker, 'streams')
    if count then
      streams = streams + tonumber(count)
    elseif redis.call('EXISTS', worker) == 1 then
      streams = streams + 1
    end
  end
  while ahead > 0 and redis.call('LLEN', KEYS[1]) > streams and take() do
    ahead = ahead - 1
  end
end
return taken
"""
# A second stop signal this soon after the first is the same stop reaching us twice (the pool
# forwards the terminal's Ctrl-C, which reached us too), not a request for a cold shutdown.
_DUPLICATE_SIGNAL_S = 1.0


class StreamWorker(BaseWorker):
    """Runs up to ``streams`` jobs of its queues at once on an asyncio event loop, one stream each."""

    def __init__(self, queues: list[str], *, connection: redis.Redis, async_connection: Redis, streams: int,
                 ssl_context: ssl.SSLContext | None = None, secret: bytes | None = None,
                 key_hosts: frozenset[str] = PRESET_HOSTS, monotonic: Callable[[], float] = time.monotonic,
                 **kwargs) -> None:
        super().__init__(queues, connection=connection, serializer=JSONSerializer, **kwargs)
        self.streams = streams
        self._monotonic = monotonic  # for how long Redis has been away (a test runs it fast)
        self._secret = secret
        self._key_hosts = key_hosts
        self._aredis = async_connection
        self._queue_wait = QueueWait(async_connection)
        self._ssl_context = ssl_context
        self._free_streams = list(range(streams))  # a heap: a job takes the lowest free stream
        # Jobs started ahead (taken, marked in flight, started in RQ), for the next streams to end:
        # a stream that ends sends its next request at once, not after the two round trips of taking
        # and starting a job (a closed loop's idle gap), and streams ending together send as they end.
        self._ready: deque[StartedJob] = deque()
        self._ahead = min(streams, _BATCH)
        self._tasks: set[asyncio.Future[None]] = set()
        self._something_ended = asyncio.Event()
        self._stop_signalled_at: float | None = None
        self._loop_lag = LoopLagMonitor()
        self._header_waits = HeaderWaits()
        self._shown_waits: set[str] = set()  # runs whose last published count of header waits was not 0
        self._saver = RecordSaver(self._save_batch)
        self._unreachable_since: float | None = None
        self._last_unreachable_log = 0.0
        self._retry_pause_s = _RETRY_PAUSE_S
        self.gave_up = False  # Redis was gone for REDIS_GONE_S: the process exits 1
        self._process: WorkerProcess | None = None
        self._ended_runs: set[str] = set()  # runs whose duration is over (their queued jobs were dropped)
        self._book = JobBook(self.name, self.key, self.queues, self.job_monitoring_interval)
        self._running: set[RQJob] = set()  # started and not ended: RQ's heartbeat keeps them alive
        self._next_keep_alive = 0.0

    def teardown(self) -> None:
        """RQ's end of a worker: its death in the worker registry, its pubsub channel closed. With
        Redis gone (the worker gave up on it, or it went just as the stop came) one line says so."""
        try:
            super().teardown()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("worker %s: could not sign off in Redis: %s", self.name, exc)

    def execute_job(self, job: Job, queue: Queue) -> None:  # RQ's one-job-at-a-time entry; not ours
        raise NotImplementedError("StreamWorker runs its jobs on its event loop (work())")

    def work(self, burst: bool = False, logging_level: str | None = "INFO", *_args: Any, **_options: Any) -> bool:
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
        session = new_session(self._ssl_context)
        try:
            self._process = WorkerProcess(self._aredis, session, self.streams, self._secret, self._key_hosts)
            await self._process.keep_clock_fresh()
            await self._beat()
            # Every object alive so far moves out of the garbage collector's sight: a full collection
            # over the imported modules takes ~100 ms on a small machine, and one landing inside a
            # stream would be measured as the server's latency.
            gc.collect()
            gc.freeze()
            background = [asyncio.create_task(self._loop_lag.run()), asyncio.create_task(self._keep_beating()),
                          asyncio.create_task(self._saver.run())]
            try:
                worked = await self._feed(burst)
                while self._tasks:
                    await asyncio.wait(set(self._tasks))
                await self._saver.drain()
            finally:
                # Each gives its Redis connection back to the pool as it ends, so that closing the pool
                # closes them all.
                await stop_tasks(background)
                await self._save_loop_lag()
        finally:  # also when Redis went away as the process started (its clock sync, its first beat)
            await session.close()
            await self._queue_wait.aclose()
            await self._aredis.aclose()
        return worked

    # -- taking and starting jobs ------------------------------------------------------------

    async def _feed(self, burst: bool) -> bool:
        """Start a job on every free stream while there are jobs; False if none was ever taken."""
        worked = False
        while self._stop_signalled_at is None:
            self._something_ended.clear()  # before looking at the state: an end from now on is not missed
            needed = min(len(self._free_streams), _BATCH)
            ahead = min(self._ahead - len(self._ready), _BATCH - needed)
            if needed == 0 and ahead <= 0:
                await self._until_something_ends()
                continue
            taken = await self._take(needed, ahead, block=not burst and needed > 0)
            if self._stop_signalled_at is not None:
                await self._give_back(taken)
                break
            if not taken and needed == 0:  # none to start ahead now: the queue is short, or empty
                await self._until_something_ends()
                continue
            if not taken:
                if burst and not self._tasks and self._unreachable_since is None:  # empty, not just unreachable
                    break
                if burst:
                    await self._until_something_ends()
                continue
            worked = True
            try:
                batch = await self._start(taken)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                # Redis went away between taking and starting: the jobs stay in RQ's intermediate
                # queue, unsent; their records are missing from the run (and say so).
                await self._redis_unreachable(exc)
                continue
            for started in batch:
                if self._free_streams:
                    self._launch(started, heapq.heappop(self._free_streams))
                else:
                    self._ready.append(started)
        await self._give_back_started_ahead()
        return worked

    def _launch(self, started: StartedJob, stream: int) -> None:
        self._track(asyncio.create_task(self._perform(started, stream)))
        if not started.marked_sent:  # off the way out: the saver's next round trip says so
            self._saver.note_sent(started.spec.run_id, self._mark(started, sent=True))

    def _stream_free(self, stream: int) -> None:
        """The stream's next job, if one was started ahead; else the stream waits for the feeder."""
        if self._ready and self._stop_signalled_at is None:
            self._launch(self._ready.popleft(), stream)
        else:
            heapq.heappush(self._free_streams, stream)
        self._something_ended.set()  # the feeder starts another job ahead, or one on this stream

    async def _give_back_started_ahead(self) -> None:
        """The jobs started ahead, as the worker stops: back to the front of their queues, in order,
        their start undone (no mark, no execution), for another worker to send."""
        ready, self._ready = list(self._ready), deque()
        if not ready:
            return
        try:
            await self._book.give_back(self._aredis, [(one.job, keys.run_in_flight(one.spec.run_id),
                                                       str(one.spec.index)) for one in ready])
        except (redis.ConnectionError, redis.TimeoutError) as exc:  # the aggregator settles them (lost jobs)
            log.warning("worker %s: could not give %d job(s) started ahead back: %s", self.name, len(ready), exc)

    async def _drop_cancelled_started_ahead(self) -> None:
        """Jobs started ahead whose run was cancelled since: dropped, unsent, with no record (their
        run's cancel reaches them within a heartbeat; no job of it is started after the cancel)."""
        runs = {one.spec.run_id for one in self._ready}
        if not runs:
            return
        async with self._aredis.pipeline(transaction=False) as pipe:
            for run_id in runs:
                pipe.exists(keys.run_cancelled(run_id))
            cancelled = {run_id for run_id, exists in zip(runs, await pipe.execute()) if exists}
        for one in [one for one in self._ready if one.spec.run_id in cancelled]:
            self._ready.remove(one)
            self._saver.save(one, None)

    async def _until_something_ends(self) -> None:
        """Until a task has ended (a stream freed up) since the feeder last looked at its state, or a
        second passes: the feeder then looks again, so a wake-up it missed can delay it, never stop it."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._something_ended.wait(), DEQUEUE_BLOCK_S)

    async def _take(self, count: int, ahead: int, block: bool) -> list[RQJob]:
        """Up to ``count`` jobs with their hashes, each moved into its queue's intermediate queue
        (RQ's way, so that a job taken by a process that dies before starting it is not forgotten),
        and up to ``ahead`` more while the queue is long, in one round trip per queue."""
        taken: list[RQJob] = []
        try:
            await self._take_into(taken, count, ahead, block)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            await self._redis_unreachable(exc)
        else:
            self._reached_redis()
        return taken

    async def _take_into(self, taken: list[RQJob], count: int, ahead: int, block: bool) -> None:
        for queue in self.queues:
            needed = max(count - len(taken), 0)
            reply = await self._aredis.eval(_TAKE_JOBS_SCRIPT, 2, queue.key, queue.intermediate_queue_key, needed,
                                            Job.redis_job_namespace_prefix, ahead, WORKERS_BY_QUEUE_KEY % queue.name)
            taken += [RQJob(job_id.decode(), queue, _hash(fields)) for job_id, fields in zip(reply[::2], reply[1::2])]
            ahead -= max(len(reply) // 2 - needed, 0)
            if len(taken) >= count and ahead <= 0:
                return
        if taken or not block:
            return
        if len(self.queues) > 1:
            await asyncio.sleep(_MULTI_QUEUE_POLL_S)
            return
        queue = self.queues[0]
        moved = await self._queue_wait.move(queue.key, queue.intermediate_queue_key, DEQUEUE_BLOCK_S)
        if moved is not None:
            job_id = moved.decode()
            fields = cast("dict[bytes, bytes]", await self._aredis.hgetall(Job.key_for(job_id)))
            if fields:
                taken.append(RQJob(job_id, queue, fields))
            else:  # deleted while queued
                await self._aredis.lrem(queue.intermediate_queue_key, 1, job_id)

    async def _redis_unreachable(self, exc: Exception) -> None:
        """Wait before the next try, longer each time (0.5 s to 8 s); one log line when Redis goes away
        and one a minute after. Away for REDIS_GONE_S with nothing in flight: the worker stops (exit 1)."""
        now = self._monotonic()
        if self._unreachable_since is None:
            self._unreachable_since = self._last_unreachable_log = now
            log.warning("worker %s: Redis unreachable (%s); retrying", self.name, exc)
        elif now - self._last_unreachable_log >= 60:
            self._last_unreachable_log = now
            log.warning("worker %s: Redis unreachable for %.0f s (%s); retrying", self.name,
                        now - self._unreachable_since, exc)
        if now - self._unreachable_since >= REDIS_GONE_S and not self._tasks:
            log.error("worker %s: Redis unreachable for %.0f s: stopping", self.name, now - self._unreachable_since)
            self.gave_up = True
            self._stop_signalled_at = now
        await asyncio.sleep(self._retry_pause_s)
        self._retry_pause_s = min(self._retry_pause_s * 2, _MAX_RETRY_PAUSE_S)

    def _reached_redis(self) -> None:
        if self._unreachable_since is not None:
            log.warning("worker %s: Redis reachable again", self.name)
        self._unreachable_since = None
        self._retry_pause_s = _RETRY_PAUSE_S

    async def _give_back(self, taken: list[RQJob]) -> None:
        """Jobs taken as a stop came: back to the front of their queues, in order."""
        if not taken:
            return
        try:
            async with self._aredis.pipeline(transaction=True) as pipe:
                for job in reversed(taken):
                    pipe.lrem(job.queue.intermediate_queue_key, 1, job.job_id)
                    pipe.lpush(job.queue.key, job.job_id)
                await pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError) as exc:  # they stay in the intermediate queue
            log.warning("worker %s: could not give %d job(s) back to the queue: %s", self.name, len(taken), exc)

    async def _start(self, taken: list[RQJob]) -> list[StartedJob]:
        """One round trip for all the jobs taken: each one's in-flight mark in its run and RQ's started
        state; a job whose run was cancelled is dropped, one that is not ours refused."""
        assert self._process is not None
        process = self._process
        starting: list[StartedJob] = []
        new_runs: dict[str, int] = {}  # runs whose first job in this process is in this batch: their TTLs
        for job in taken:
            spec = job_spec_or_refusal(job, self._secret)
            if isinstance(spec, str):
                log.warning("worker %s: refused job %s: %s", self.name, job.job_id, spec)
                self._background(asyncio.to_thread(self._fail_in_rq, job, f"refused by tokenbench worker: {spec}"))
                continue
            first_of_run = spec.run_id not in process.runs_seen and spec.run_id not in new_runs
            if first_of_run:
                new_runs[spec.run_id] = spec.ttl_s
            starting.append(StartedJob(job, spec, first_of_run))
        if new_runs:
            async with self._aredis.pipeline(transaction=False) as pipe:
                for run_id, ttl_s in new_runs.items():
                    queue_register_worker(pipe, run_id, process.name, process.environment, ttl_s)
                await pipe.execute()
        process.runs_seen |= new_runs.keys()  # only now: a batch that never reached Redis registered nothing
        sending_now = len(self._free_streams)  # the others are started ahead, marked unsent
        begun = await self._book.start(self._aredis, [
            (one.job, in_flight_words(one.spec.run_id, self._mark(one, sent=at < sending_now), one.spec.ttl_s))
            for at, one in enumerate(starting)])
        return [replace(one, marked_sent=at < sending_now)
                for at, (one, started) in enumerate(zip(starting, begun)) if started]

    def _mark(self, started: StartedJob, sent: bool) -> InFlight:
        assert self._process is not None
        spec = started.spec
        return InFlight(spec.index, self._process.name, spec.attempt, started.job.job_id, sent)

    # -- one job -----------------------------------------------------------------------------

    async def _perform(self, started: StartedJob, stream: int) -> None:
        """Send the job's request (or its conversation's turns) on ``stream``; the stream is free again
        as soon as it ends, and every record goes to the saver."""
        assert self._process is not None
        job, spec = started.job, started.spec
        self._loop_lag.job_started(spec.run_id)
        self._running.add(job)
        conversation = Conversation(self._process, spec, job.job_id, self._header_waits,
                                    lambda turn: self._finished(started, turn), stream) if spec.next_turns else None
        records: list[RequestRecord] = []
        warmups: list[RequestRecord] = []
        try:
            timeout = job.timeout
            async with asyncio.timeout(timeout if timeout and timeout > 0 else None):
                if conversation is None:
                    records = [await run_job(self._process, spec, self._header_waits, context=RecordContext(stream))]
                else:
                    await conversation.run()  # each turn's record is saved as it ends
            if started.first_of_run and spec.warmup:
                warmups = self._process.warmup(spec).result()
        except RunEnded:  # not sent: the run's duration is over, and so are its jobs still queued
            if spec.run_id not in self._ended_runs:
                self._ended_runs.add(spec.run_id)
                self._background(self._drop_queued_jobs(job.queue, spec.run_id))
        except TimeoutError:
            records = self._interrupted(conversation, spec, stream, ErrorType.JOB_TIMEOUT,
                                        f"RQ's job timeout ({timeout} s) passed")
        except asyncio.CancelledError:
            self._finish_job(started, self._interrupted(conversation, spec, stream, ErrorType.WORKER_STOPPED,
                                                        "the worker was stopped (cold shutdown) during the request"))
            raise
        except Exception:  # a bug: the job's record is missing, and the log says why
            log.exception("worker %s: job %s failed", self.name, job.job_id)
            return
        finally:
            self._running.discard(job)
            self._loop_lag.job_ended(spec.run_id)
            self._stream_free(stream)
        self._finish_job(started, records, warmups)

    def _finish_job(self, started: StartedJob, records: list[RequestRecord],
                    warmups: list[RequestRecord] | None = None) -> None:
        """Hand the job's last records to the saver, the job's end with the last of them (a
        conversation that ran to its end has none left: its turns were saved as they ended)."""
        interruption = next((r.error for r in records if r.error_type in _INTERRUPTIONS), None)
        for record in records[:-1]:
            self._finished(started, record)
        last = records[-1] if records else None
        if last is not None:
            self._log_outcome(last)
        self._saver.save(started, last, warmups, ends_job=True, interruption=interruption)

    def _finished(self, started: StartedJob, record: RequestRecord) -> None:
        """Hand a record to the saver without ending its job (a conversation's turns, as they end)."""
        self._log_outcome(record)
        self._saver.save(started, record, ends_job=False)

    def _log_outcome(self, record: RequestRecord) -> None:
        if log.isEnabledFor(logging.INFO):
            log.info("worker %s: %s #%d %s", self.name, record.run_id, record.index, outcome_line(record))

    def _interrupted(self, conversation: Conversation | None, spec: JobSpec, stream: int, error_type: str,
                     message: str) -> list[RequestRecord]:
        """The record of the request in flight on ``stream`` when the job was stopped; with a
        conversation's, those of its turns not sent yet."""
        assert self._process is not None
        if conversation is None:
            return [RequestRecord.failure(spec, self._process.name, self._process.host, error_type, message,
                                          clock.now(), stream=stream)]
        in_flight = RequestRecord.failure(conversation.current, self._process.name, self._process.host, error_type,
                                          message, clock.now(), turn=conversation.turn, stream=stream)
        return [in_flight, *conversation.unsent(f"turn {conversation.turn} was stopped: {message}")]

    def _background(self, awaitable: Awaitable[None]) -> None:
        """Run beside the streams; the feeder waits for it before a burst worker exits."""
        self._track(asyncio.ensure_future(awaitable))

    def _track(self, task: asyncio.Future[None]) -> None:
        """Keep ``task`` in ``_tasks`` until it is done, then wake the feeder. Both in one callback:
        a feeder woken before the task has left ``_tasks`` would see it still running, go back to
        sleep, and a burst worker would never exit."""
        self._tasks.add(task)

        def done(_task: asyncio.Future[None]) -> None:
            self._tasks.discard(task)
            self._something_ended.set()

        task.add_done_callback(done)

    async def _save_batch(self, sent: list[tuple[str, InFlight]], batch: list[Finished]) -> None:
        """One round trip for a batch of finished jobs: each record (stored once, counted once) and
        RQ's end of its job, after the marks of requests sent since they were started ahead. While
        Redis is away the records are kept and retried for ``SAVE_RETRY_S``."""
        entries = []
        for finished in batch:
            spec = finished.started.spec
            save = no_record_words(spec.run_id, spec.index) if finished.record is None else \
                save_record_words(finished.record, spec.ttl_s)
            entries.append(self._book.end_words(finished.started.job, save, finished.ends_job, finished.failed))
        deadline = self._monotonic() + SAVE_RETRY_S
        while True:
            try:
                async with self._aredis.pipeline(transaction=False) as pipe:
                    queue_note_sent(pipe, sent)
                    for finished in batch:
                        if finished.warmups:
                            queue_save_warmup_records(pipe, finished.warmups, finished.started.spec.ttl_s)
                    self._book.queue_end(pipe, entries)
                    await pipe.execute()
                break
            except (redis.ConnectionError, redis.TimeoutError):
                if self._monotonic() >= deadline:
                    log.error("worker %s: Redis unreachable for %g s: %d record(s) not saved", self.name,
                              SAVE_RETRY_S, len(batch))
                    return
                await asyncio.sleep(_RETRY_PAUSE_S)
        for finished in batch:
            if finished.failed:
                await asyncio.to_thread(self._fail_in_rq, finished.started.job, finished.interruption or "")

    async def _drop_queued_jobs(self, queue: Queue, run_id: str) -> None:
        """Remove the run's jobs still on ``queue`` (and their hashes), in one step; other runs' stay."""
        try:
            dropped = await drop_queued_jobs(self._aredis, queue.key, run_id)
        except (redis.ConnectionError, redis.TimeoutError) as exc:  # they are taken and not sent, one by one
            log.warning("worker %s: could not drop run %s's queued jobs: %s", self.name, run_id, exc)
            return
        log.info("worker %s: run %s's duration is over: %d queued job(s) dropped", self.name, run_id, dropped)

    def _fail_in_rq(self, job: RQJob, reason: str) -> None:
        """RQ's failed state for the job, in its FailedJobRegistry (rare: refused or interrupted jobs;
        an interrupted job's execution is gone already, with its end)."""
        with self.connection.pipeline() as pipe:
            record_job_failure(job.rq_job(self.connection), reason, pipe)  # failed status, registry, Result
            pipe.lrem(job.queue.intermediate_queue_key, 1, job.job_id)
            self.increment_failed_job_count(pipeline=pipe)
            pipe.execute()

    # -- liveness, stop ----------------------------------------------------------------------

    async def _keep_beating(self) -> None:
        """Every second: the liveness key the aggregator watches, RQ's worker heartbeat, the loop-lag
        histograms of the runs in progress; every job monitoring interval (RQ's, 30 s), RQ's heartbeat
        of the jobs running; every minute, the clock offset."""
        assert self._process is not None
        while True:
            await asyncio.sleep(keys.HEARTBEAT_INTERVAL_S)
            try:
                await self._beat()
                await self._drop_cancelled_started_ahead()
                if self._monotonic() >= self._next_keep_alive:
                    self._next_keep_alive = self._monotonic() + self._book.monitoring_interval_s
                    await self._book.keep_alive(self._aredis, [*self._running, *(one.job for one in self._ready)])
                await self._save_loop_lag()
                await self._save_header_waits()
                await self._process.keep_clock_fresh()
            except (redis.ConnectionError, redis.TimeoutError) as exc:  # Redis away: try again next beat
                log.warning("worker %s: heartbeat failed: %s", self.name, exc)

    async def _beat(self) -> None:
        assert self._process is not None
        ttl = self.worker_ttl + 60
        async with self._aredis.pipeline(transaction=False) as pipe:
            pipe.set(keys.worker_alive(self._process.name), 1, ex=keys.WORKER_ALIVE_TTL_S)
            pipe.hset(self.key, mapping={"last_heartbeat": utcformat(now()),
                                         "state": WorkerStatus.BUSY if self._tasks else WorkerStatus.IDLE,
                                         "streams": self.streams})  # for the others' taking ahead
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

    async def _save_header_waits(self) -> None:
        """Each run's count of this process's requests waiting for headers, and when (Redis clock)."""
        assert self._process is not None
        waiting = self._header_waits.by_run
        runs = {run_id for run_id, count in waiting.items() if count > 0}
        if not runs and not self._shown_waits:
            return
        at = clock.now()
        async with self._aredis.pipeline(transaction=False) as pipe:
            for run_id in runs | self._shown_waits:
                pipe.hset(keys.run_header_waits(run_id), self._process.name, f"{waiting[run_id]} {at:.3f}")
                pipe.expire(keys.run_header_waits(run_id), keys.RUN_TTL_S)
            await pipe.execute()
        for run_id in self._shown_waits - runs:
            waiting.pop(run_id, None)
        self._shown_waits = runs

    def _on_stop_signal(self) -> None:
        """First signal: a warm shutdown (take no more jobs, finish those in flight). A second, later
        one: a cold shutdown (every request in flight ends now with a ``worker_stopped`` record)."""
        moment = time.monotonic()
        if self._stop_signalled_at is None:
            log.info("worker %s: warm shutdown: finishing %d request(s) in flight", self.name, len(self._tasks))
            self._stop_signalled_at = moment
            self._something_ended.set()
            self._background(self._queue_wait.stop(self._aredis))  # an idle worker stops now, not in a second
        elif moment - self._stop_signalled_at > _DUPLICATE_SIGNAL_S:
            log.warning("worker %s: cold shutdown", self.name)
            for task in self._tasks:
                task.cancel()


@dataclass(frozen=True)
class StartedJob:
    job: RQJob
    spec: JobSpec
    first_of_run: bool  # this process's first job of the run: it saves the warm-up records
    marked_sent: bool = True  # False: started ahead, its in-flight mark says unsent


@dataclass(frozen=True)
class Finished:
    started: StartedJob
    record: RequestRecord | None
    warmups: list[RequestRecord]
    ends_job: bool  # the job's last record (or, for a conversation, its end): RQ's end of the job comes with it
    # Why the job was interrupted (job timeout, cold shutdown), when it was: then it is kept in RQ's
    # FailedJobRegistry, as failed in RQ's terms.
    interruption: str | None = None

    @property
    def failed(self) -> bool:
        return self.ends_job and self.interruption is not None


class RecordSaver:
    """Saves finished jobs in batches, in the background: a stream takes its next job without waiting
    for its last record to reach Redis, and many streams ending at once cost one round trip."""

    def __init__(self, save_batch: Callable[[list[tuple[str, InFlight]], list[Finished]], Awaitable[None]]) -> None:
        self._save_batch = save_batch
        self._pending: list[Finished] = []
        self._sent: list[tuple[str, InFlight]] = []  # (run id, mark) of requests sent after starting ahead
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def save(self, started: StartedJob, record: RequestRecord | None, warmups: list[RequestRecord] | None = None,
             ends_job: bool = True, interruption: str | None = None) -> None:
        self._pending.append(Finished(started, record, warmups or [], ends_job, interruption))
        self._idle.clear()
        self._wakeup.set()

    def note_sent(self, run_id: str, mark: InFlight) -> None:
        """Rewrite a request's in-flight mark as sent, in the next round trip (before its record's)."""
        self._sent.append((run_id, mark))
        self._idle.clear()
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            # The stream that just ended takes and starts its next job first: saving is off the path
            # between two requests (its CPU would lengthen the idle gap), and waiting gathers more.
            await asyncio.sleep(_SAVE_DELAY_S)
            self._wakeup.clear()
            while self._pending or self._sent:
                sent, self._sent = self._sent, []
                batch, self._pending = self._pending[:_BATCH], self._pending[_BATCH:]
                await self._save_batch(sent, batch)
            self._idle.set()

    async def drain(self) -> None:
        """Until every record handed in so far is saved (or given up on)."""
        await self._idle.wait()


async def stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the tasks and wait for them to end, cancelling again any that go on (under load a
    cancel can reach redis-py as a timeout, which the heartbeat treats as Redis away and retries);
    a few seconds at most, so a worker's stop is bounded."""
    for _ in range(_STOP_TRIES):
        pending = [task for task in tasks if not task.done()]
        if not pending:
            return
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=_STOP_WAIT_S)


def _hash(fields: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(fields[::2], fields[1::2]))


def outcome_line(record: RequestRecord) -> str:
    """A request's outcome in a few words, for the worker's one log line per job."""
    if record.success:
        ttft = "-" if record.ttft_ms is None else f"{record.ttft_ms:,.1f} ms"
        return f"ok: {record.output_tokens} tokens, TTFT {ttft}, E2E {record.elapsed_ms or 0:,.1f} ms"
    return f"{record.error_type}: {terminal_safe(record.error or '')[:160]}"


def job_spec_or_refusal(job: RQJob, secret: bytes | None = None) -> JobSpec | str:
    """The job's spec if the job is one of ours, else why it is not; read from its data without
    importing anything. With a ``secret``, a job not signed with it is not ours either."""
    try:
        func_name, args, kwargs = job.call()
    except Exception as exc:  # undecodable data
        return f"its data cannot be read ({type(exc).__name__})"
    if func_name != keys.JOB_FUNCTION:
        return f"it calls {func_name!r}, not {keys.JOB_FUNCTION!r}"
    if kwargs or not isinstance(args, list) or len(args) != 1 or not isinstance(args[0], dict):
        return "its arguments are not one job spec"
    try:
        spec = JobSpec.from_dict(args[0])
    except TypeError as exc:
        return f"its job spec is incomplete ({exc})"
    if secret is not None and not is_signed_by(args[0], secret):
        return f"it is not signed with this worker's {SECRET_ENV}" if args[0].get("signature") is None else \
            f"its signature does not match this worker's {SECRET_ENV}"
    return spec
