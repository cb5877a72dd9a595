"""Enqueue a run: write its metadata, then one RQ job per prompt in one pipeline."""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timezone
from typing import Any

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from tokenbench import __version__
from tokenbench.producer.arrivals import ArrivalSchedule
from tokenbench.producer.conversations import sessions_of
from tokenbench.producer.prompts import Prompt, as_messages
from tokenbench.producer.time_bounds import UNBOUNDED, TimeBounds
from tokenbench.shared import keys
from tokenbench.shared.endpoint import Endpoint
from tokenbench.shared.errors import TokenbenchError
from tokenbench.shared.records import JobSpec, RunMeta
from tokenbench.shared.redis_conn import epoch_seconds
from tokenbench.shared.rq_jobs import request_job
from tokenbench.shared.signing import SIGNATURE_FIELD, signature

# The worker fails a request itself after the endpoint's total timeout; RQ's own job timeout is
# only the backstop for a worker that cannot.
JOB_TIMEOUT_MARGIN_S = 30
# An open-loop schedule starts this long after its last job is written (see enqueue_run).
SCHEDULE_LEAD_S = 0.5
# A bound on enqueueing, to size the job timeout of a scheduled job (it may wait that long, too).
SLOWEST_ENQUEUE_JOBS_PER_S = 500


def new_run_id(now: float | None = None) -> str:
    stamp = datetime.fromtimestamp(now or time.time(), tz=timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(3)}"


def enqueue_run(
    connection: redis.Redis,
    endpoint: Endpoint,
    prompts: list[Prompt],
    *,
    run_id: str | None = None,
    queue_name: str = keys.DEFAULT_QUEUE,
    requested_concurrency: int | None = None,
    warmup: int = 0,
    ttl_s: int = keys.RUN_TTL_S,
    schedule: ArrivalSchedule | None = None,
    config: dict[str, Any] | None = None,
    workload: dict[str, Any] | None = None,
    secret: bytes | None = None,
    turn_delay_s: float = 0.0,
    time_bounds: TimeBounds = UNBOUNDED,
) -> RunMeta:
    """Write the run's metadata and enqueue one job per prompt; return the metadata.

    With a ``schedule`` each job carries when it is due after the schedule's start, and the workers
    send it then, not as soon as they can. The start (on the Redis server's clock) is written once
    every job is, so however long enqueueing takes the first requests are not born late; a worker
    that takes a job before it is written waits for it. With a ``secret`` every job is signed
    (shared/signing.py). A conversation's turns are one job (producer/conversations.py); a
    schedule times its first turn, and ``turn_delay_s`` comes between an answer and the next turn.
    ``time_bounds``: the run's duration, ramp-up (needs ``requested_concurrency``) and measuring
    start (producer/time_bounds.py)."""
    run_id = run_id or new_run_id()
    if not keys.is_valid_run_id(run_id):
        raise TokenbenchError(f"invalid run id {run_id!r}: use 1-64 letters, digits, '_' or '-'")
    if connection.exists(keys.run_meta(run_id)):
        raise TokenbenchError(f"run id {run_id!r} already exists in this Redis")
    meta = RunMeta(
        run_id=run_id,
        mode=endpoint.mode,
        model=endpoint.model,
        base_url=endpoint.base_url,
        max_tokens=endpoint.max_tokens,
        num_prompts=len(prompts),
        queue=queue_name,
        created_at=time.time(),
        prompt_ids=[p.id for p in prompts],
        tokenbench_version=__version__,
        requested_concurrency=requested_concurrency,
        max_retries=endpoint.max_retries,
        warmup=warmup,
        ttl_s=ttl_s,
        config=config,
        workload=workload,
        duration_s=time_bounds.duration_s,
        ramp_up_s=time_bounds.ramp_up_s,
        measure_after_s=time_bounds.measure_after_s,
    )
    if time_bounds.ramp_up_s and (schedule is not None or not requested_concurrency):
        raise TokenbenchError("a ramp-up spreads the first requests of a closed-loop run over its streams: it needs "
                              "the run's concurrency and no request rate")
    sessions = sessions_of(prompts)  # a conversation is one job; any other prompt is one job too
    if schedule is not None:
        meta.request_rate, meta.arrival = schedule.rate, schedule.arrival
        meta.burstiness, meta.seed = schedule.burstiness, schedule.seed
    send_after = due_offsets(len(sessions), schedule, time_bounds, requested_concurrency)
    # Jobs due at a time, and every job of a run with a duration, wait for the run's start.
    waits_for_start = any(offset is not None for offset in send_after) or time_bounds.duration_s is not None
    longest_wait_s = 0.0  # a scheduled job may wait on its worker until it is due
    if waits_for_start:
        longest_wait_s = max((o for o in send_after if o is not None), default=0.0) + SCHEDULE_LEAD_S + \
            len(prompts) / SLOWEST_ENQUEUE_JOBS_PER_S
    endpoint_dict = endpoint.to_dict()
    specs = [job_spec(run_id, session, endpoint_dict, warmup=warmup, ttl_s=ttl_s, send_after_s=send_after[n],
                      turn_delay_s=turn_delay_s, duration_s=time_bounds.duration_s).to_dict()
             for n, session in enumerate(sessions)]
    if secret is not None:
        for spec in specs:
            spec[SIGNATURE_FIELD] = signature(spec, secret)
    jobs = [request_job(spec, timeout=job_timeout_s(endpoint, len(session), turn_delay_s, longest_wait_s), ttl_s=ttl_s,
                        description=f"tokenbench {run_id} #{spec['index']} {spec['session_id'] or spec['prompt_id']}")
            for spec, session in zip(specs, sessions)]
    queue = Queue(queue_name, connection=connection, serializer=JSONSerializer)
    with connection.pipeline() as pipe:
        pipe.set(keys.run_meta(run_id), meta.to_json(), ex=ttl_s)
        pipe.zadd(keys.RUNS_INDEX, {run_id: meta.created_at})
        queue.enqueue_many(jobs, pipeline=pipe)
        pipe.execute()
    if waits_for_start:  # the moment the schedule and the duration count from
        connection.set(keys.run_schedule_start(run_id), epoch_seconds(connection.time()) + SCHEDULE_LEAD_S, ex=ttl_s)
    return meta


def due_offsets(jobs: int, schedule: ArrivalSchedule | None, time_bounds: TimeBounds,
                requested_concurrency: int | None) -> list[float | None]:
    """When each job is due after the run's start: on the open-loop schedule, on the ramp-up, or
    (None) as soon as a stream is free."""
    if schedule is not None:
        return list(schedule.send_offsets(jobs))
    if time_bounds.ramp_up_s and requested_concurrency:
        return list(time_bounds.ramp_offsets(jobs, requested_concurrency))
    return [None] * jobs


def job_timeout_s(endpoint: Endpoint, turns: int, turn_delay_s: float, longest_wait_s: float) -> int:
    """RQ's backstop for one job: a conversation's turns take their time one after the other, with the
    think time between, after the job's wait for when it is due."""
    return int((endpoint.total_timeout_s + turn_delay_s) * turns + longest_wait_s) + JOB_TIMEOUT_MARGIN_S


def job_spec(run_id: str, session: list[tuple[int, Prompt]], endpoint: dict[str, Any], *, warmup: int, ttl_s: int,
             send_after_s: float | None, turn_delay_s: float, duration_s: float | None) -> JobSpec:
    """The job of one prompt, or of one conversation's turns (the first sent as its messages, the
    next ones as the user's words, after the model's answers: worker/conversation.py)."""
    index, first = session[0]
    conversation = first.session_id is not None
    return JobSpec(
        run_id=run_id,
        index=index,
        prompt_id=first.id,
        category=first.category,
        messages=as_messages(first),
        max_tokens=first.max_tokens,
        warmup=warmup,
        ttl_s=ttl_s,
        send_after_s=send_after_s,
        endpoint=endpoint,
        session_id=first.session_id,
        next_turns=[{"prompt_id": p.id, "category": p.category, "content": p.text, "max_tokens": p.max_tokens}
                    for _, p in session[1:]]
        if conversation else None,
        turn_delay_s=turn_delay_s if conversation else 0.0,
        duration_s=duration_s,
    )
