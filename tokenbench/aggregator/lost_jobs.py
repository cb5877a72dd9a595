"""Finding the requests whose worker process died, and settling each one exactly once.

Every request in flight carries the name of its worker process, and every live worker process keeps
a liveness key fresh (see worker/heartbeat.py). A request whose worker's key has expired will never
get a record from that worker: it is rerun when the run allows retries, else it gets a failed
record of type ``worker_died``. The aggregator does this because it is the one process certain to
be waiting for the run's records.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer

from tokenbench.shared import keys
from tokenbench.shared.record_store import InFlight, read_in_flight, save_record
from tokenbench.shared.records import ErrorType, JobSpec, RequestRecord, RunMeta
from tokenbench.shared.redis_conn import epoch_seconds
from tokenbench.shared.rq_jobs import request_job

CHECK_INTERVAL_S = 1.0


class LostJobWatch:
    """Call ``check()`` while waiting for a run; it settles lost requests at most once a second.

    A worker's key also expires while Redis is down or restarting, so nothing is declared lost until
    this process has reached Redis without a break for a whole key lifetime.
    """

    def __init__(self, connection: redis.Redis, meta: RunMeta, clock: Callable[[], float] = time.monotonic) -> None:
        self._connection = connection
        self._meta = meta
        self._clock = clock
        self._reachable_since = clock()
        self._last_check = float("-inf")
        self.rerun = 0
        self.declared_dead = 0

    def redis_unreachable(self) -> None:
        self._reachable_since = self._clock()

    def check(self) -> None:
        now = self._clock()
        if now - self._last_check < CHECK_INTERVAL_S or now - self._reachable_since < keys.WORKER_ALIVE_TTL_S:
            return
        self._last_check = now
        in_flight = read_in_flight(self._connection, self._meta.run_id)
        workers = sorted({entry.worker for entry in in_flight})
        with self._connection.pipeline(transaction=False) as pipe:  # one round trip, however many workers
            for worker in workers:
                pipe.exists(keys.worker_alive(worker))
            alive = {worker for worker, exists in zip(workers, pipe.execute()) if exists}
        for entry in in_flight:
            if entry.worker not in alive:
                self._settle(entry)

    def _settle(self, entry: InFlight) -> None:
        # HDEL succeeds for one caller only: two aggregators on one run cannot both settle it.
        if not self._connection.hdel(keys.run_in_flight(self._meta.run_id), str(entry.index)):
            return
        if self._connection.hexists(keys.run_records(self._meta.run_id), str(entry.index)):
            return  # the record made it after all
        try:
            job = Job.fetch(entry.job_id, connection=self._connection, serializer=JSONSerializer)
        except NoSuchJobError:
            return  # nothing left to rerun or describe; the report lists the request as missing
        spec = JobSpec.from_dict(job.args[0])
        if not entry.sent:  # started ahead, never sent: another worker sends it, as the same attempt
            self._enqueue_again(job, spec, job_id=f"{job.id}-again", description=job.description or job.id)
            self.rerun += 1
            return
        if spec.next_turns:
            self._settle_conversation(entry, spec)
            return
        if entry.attempt < self._meta.max_retries:
            spec.attempt += 1
            self._enqueue_again(job, spec, description=f"{job.description} (rerun {spec.attempt})")
            self.rerun += 1
            return
        host = entry.worker.rpartition(":")[0] or socket.gethostname()
        message = (f"worker {entry.worker} died during the request (no heartbeat for "
                   f"{keys.WORKER_ALIVE_TTL_S} s); attempt {spec.attempt + 1} of {self._meta.max_retries + 1}")
        died = RequestRecord.failure(spec, entry.worker, host, ErrorType.WORKER_DIED, message,
                                     epoch_seconds(self._connection.time()))
        save_record(self._connection, died, ttl_s=self._meta.ttl_s)
        self.declared_dead += 1

    def _settle_conversation(self, entry: InFlight, spec: JobSpec) -> None:
        """A conversation is not rerun: the model's answers so far died with its worker. The turn in
        flight is ``worker_died``, the turns after it ``previous_turn_failed``."""
        in_flight = entry.index - spec.index + 1
        host = entry.worker.rpartition(":")[0] or socket.gethostname()
        at = epoch_seconds(self._connection.time())
        died = RequestRecord.failure(spec.for_turn(in_flight, []), entry.worker, host, ErrorType.WORKER_DIED,
                                     f"worker {entry.worker} died during turn {in_flight} of session "
                                     f"{spec.session_id} (no heartbeat for {keys.WORKER_ALIVE_TTL_S} s); "
                                     "a conversation is not rerun", at, turn=in_flight)
        for record in [died, *RequestRecord.unsent_turns(spec, in_flight + 1, entry.worker, host,
                                                         f"the worker died during turn {in_flight}", at)]:
            save_record(self._connection, record, ttl_s=self._meta.ttl_s)
        self.declared_dead += 1

    def _enqueue_again(self, job: Job, spec: JobSpec, description: str, job_id: str | None = None) -> None:
        """``spec`` onto the front of the run's queue (under a new job id: the dead worker's job stays
        in RQ's registries as it left it)."""
        queue = Queue(self._meta.queue, connection=self._connection, serializer=JSONSerializer)
        timeout = None if job.timeout is None else int(job.timeout)  # the first attempt's: it was an int
        queue.enqueue_many([request_job(spec.to_dict(), timeout=timeout, ttl_s=self._meta.ttl_s,
                                        description=description, at_front=True,
                                        job_id=job_id)])
