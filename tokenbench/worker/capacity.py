"""How many streams this host can drive: checked before a run, so that a concurrency the workers
cannot keep is refused with the limit named instead of reported as the server's."""

from __future__ import annotations

import math
import os
import resource

# Measured with benchmarks/scale.py on a 2-core VM (docs/performance.md): 1,024 streams kept 0.92
# of a mock's true pace (ITL 50 ms) with the loop-lag warning firing; beyond that the workers, not
# the server, set the figures.
STREAMS_PER_CORE = 512
# Open files a worker process needs besides one socket per stream: Redis connections, the event
# loop, logs, the DNS resolver.
FILES_PER_PROCESS = 64


def cpu_count() -> int:
    """The cores this process may run on: its affinity mask (`taskset`, a container's cpuset), where
    the system has one, else every core."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no affinity masks (macOS)
        return os.cpu_count() or 1


def concurrency_limit(cores: int | None = None) -> int:
    return STREAMS_PER_CORE * (cores or cpu_count())


def too_many_streams(concurrency: int, cores: int | None = None) -> str | None:
    """Why ``concurrency`` streams on this host would make the workers the bottleneck, or None."""
    cores = cores or cpu_count()
    limit = concurrency_limit(cores)
    if concurrency <= limit:
        return None
    return (f"{concurrency} streams are more than this host can time at a server's pace: about {STREAMS_PER_CORE} "
            f"per core, {cores} core(s): {limit} (docs/performance.md). Run `tokenbench worker` on more hosts on "
            "the same Redis, or give --force to go on")


def too_few_open_files(streams_per_process: int, hard_limit: int | None = None) -> str | None:
    """Why a process cannot hold ``streams_per_process`` sockets under this system's open-file limit, or None."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1] if hard_limit is None else hard_limit
    needed = streams_per_process + FILES_PER_PROCESS
    if hard == resource.RLIM_INFINITY or needed <= hard:
        return None
    return (f"{streams_per_process} streams in one process need {needed} open files, more than this system allows "
            f"({hard}, `ulimit -Hn`): spread them over more processes")


def raise_open_file_limit(streams_per_process: int) -> None:
    """Lift the soft open-file limit (often 1,024) to what the streams need, within the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = streams_per_process + FILES_PER_PROCESS
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def per_process(concurrency: int, processes: int) -> int:
    return math.ceil(concurrency / max(1, processes))
