"""How a tokenbench request goes onto RQ's queue, the first time (producer) and when it is rerun
(the aggregator's lost-job watch): one place for what every such job is."""

from __future__ import annotations

from typing import Any

from rq import Queue
from rq.queue import EnqueueData

from tokenbench.shared import keys


def request_job(spec: dict[str, Any], *, timeout: int | None, ttl_s: int, description: str,
                at_front: bool = False, job_id: str | None = None) -> EnqueueData:
    """Our entry point with the job spec as its one argument (the workers run nothing else), under
    the id of the spec's request and attempt unless ``job_id`` is given. No result is kept (the
    record is the result); a failure stays in RQ's registry as long as the run's keys do."""
    return Queue.prepare_data(
        keys.JOB_FUNCTION,
        args=(spec,),
        job_id=job_id or keys.job_id(spec["run_id"], spec["index"], spec.get("attempt", 0)),
        timeout=timeout,
        result_ttl=0,
        failure_ttl=ttl_s,
        description=description,
        at_front=at_front,
    )
