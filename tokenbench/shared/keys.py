"""Names of every Redis key tokenbench writes, in one place.

A run owns the keys under ``tokenbench:run:{run_id}``; the RQ jobs of a run live on an RQ queue
(``tokenbench`` unless another is given) and carry the run id in their arguments.
"""

import re

PREFIX = "tokenbench"
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
DEFAULT_QUEUE = "tokenbench"
RUNS_INDEX = f"{PREFIX}:runs"  # sorted set: run id -> creation time (epoch seconds)
RUN_TTL_S = 7 * 24 * 3600  # how long a run's keys and failed jobs stay in Redis
# A worker process refreshes its liveness key every HEARTBEAT_INTERVAL_S; the key expires
# WORKER_ALIVE_TTL_S after the last refresh, which bounds how long a dead worker goes unnoticed.
HEARTBEAT_INTERVAL_S = 1.0
WORKER_ALIVE_TTL_S = 5
# What every RQ job of a run names as its function. `tokenbench worker` never imports or calls it:
# it refuses a job that names anything else, and runs ours on its event loop.
JOB_FUNCTION = "tokenbench.worker.job.execute"


def run_meta(run_id: str) -> str:
    """String key: the run's metadata as JSON (see records.RunMeta)."""
    return f"{PREFIX}:run:{run_id}:meta"


def run_records(run_id: str) -> str:
    """Hash key: job index -> the job's RequestRecord as JSON. One field per job: never counted twice."""
    return f"{PREFIX}:run:{run_id}:records"


def run_progress(run_id: str) -> str:
    """Hash key: running counters (done, failed, output_tokens) for progress displays."""
    return f"{PREFIX}:run:{run_id}:progress"


def run_in_flight(run_id: str) -> str:
    """Hash key: job index -> {"worker", "attempt", "job_id"} of each request being sent right now."""
    return f"{PREFIX}:run:{run_id}:in_flight"


def run_warmup(run_id: str) -> str:
    """List key: the records of warm-up requests (left out of every statistic)."""
    return f"{PREFIX}:run:{run_id}:warmup"


def run_workers(run_id: str) -> str:
    """Hash key: worker (host:pid) -> JSON of its environment (host, Python, versions), written once per run."""
    return f"{PREFIX}:run:{run_id}:workers"


def run_loop_lag(run_id: str) -> str:
    """Hash key: worker (host:pid) -> JSON histogram of its event loop's lag while it served the run
    (``{"bin_ms": width, "counts": {bin: n}}``, see worker/loop_lag.py)."""
    return f"{PREFIX}:run:{run_id}:loop_lag"


def run_header_waits(run_id: str) -> str:
    """Hash key: worker (host:pid) -> "N T": N of its requests of the run wait for their response's
    headers, as of T (epoch seconds, Redis clock). For progress displays."""
    return f"{PREFIX}:run:{run_id}:header_waits"


def run_schedule_start(run_id: str) -> str:
    """String key, open-loop runs: epoch seconds (Redis clock) that every job's ``send_after_s`` counts from."""
    return f"{PREFIX}:run:{run_id}:schedule_start"


def run_cancelled(run_id: str) -> str:
    """String key, set by `tokenbench cancel`: epoch seconds of the cancellation."""
    return f"{PREFIX}:run:{run_id}:cancelled"


def worker_alive(worker: str) -> str:
    """String key with a short TTL that a live worker process keeps refreshing (``worker`` = host:pid)."""
    return f"{PREFIX}:worker:{worker}:alive"


def run_queue(run_id: str) -> str:
    """RQ queue name that `tokenbench run` uses so that only its own workers take its jobs."""
    return f"{PREFIX}:{run_id}"


def job_id(run_id: str, index: int, attempt: int = 0) -> str:
    """RQ job id of the index-th request of a run (RQ allows letters, digits, '_' and '-')."""
    return f"{job_id_prefix(run_id)}{index}" + (f"-retry{attempt}" if attempt else "")


def job_id_prefix(run_id: str) -> str:
    """What every RQ job id of the run starts with."""
    return f"{PREFIX}-{run_id}-"


def is_valid_run_id(run_id: str) -> bool:
    """Run ids end up in key and job names: 1-64 letters, digits, '_' or '-'."""
    return bool(_RUN_ID.fullmatch(run_id))
