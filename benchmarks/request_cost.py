"""What one request costs a client's process in CPU: a tokenbench worker process against a bare client.

At C=256 every stream ends at about the same moment and all send again together: the CPU each
client spends per request is then taken from the server on the same cores, and shows as TTFT
(docs/performance.md, "Where the C=256 error sits"). This isolates that cost. Against one mock
(TTFT 20 ms, 2 tokens 1 ms apart: little per-chunk work), one process of each client keeps C
streams busy with closed-loop requests:

- the bare client (runner/bare_client.py: one aiohttp session, no Redis, no record);
- `tokenbench worker -n 1 --streams C --burst` on a queue of jobs enqueued beforehand, against a
  redis-server of this script's (its CPU while the worker ran is printed apart: it shares the cores
  with the server too).

Each client runs twice, with N and 3N requests; the difference of its process tree's CPU seconds
(wait4's usage of the child, which holds its reaped children) over the 2N extra requests is the
CPU a request costs it, start-up and imports left out.

    python benchmarks/request_cost.py [--concurrency 64] [--requests 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from scale import process_cpu_s  # benchmarks/, this script's directory

from tokenbench.producer.enqueue import enqueue_run
from tokenbench.producer.prompts import select_prompts
from tokenbench.runner.children import launch_mock_server, mock_server_url, stop_child
from tokenbench.runner.embedded_redis import embedded_redis
from tokenbench.shared.endpoint import resolve_endpoint
from tokenbench.shared.redis_conn import connect

MAX_TOKENS = 2
_BARE_CLIENT = """
import asyncio, sys
from tokenbench.runner.bare_client import bare_requests
asyncio.run(bare_requests(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
"""


def cpu_s_of(command: list[str]) -> float:
    """User + system CPU seconds of ``command``'s process and the children it waited for."""
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{command[:4]} exited {child.returncode}")
    return usage.ru_utime + usage.ru_stime


def bare_cpu_s(base_url: str, concurrency: int, requests: int) -> float:
    url = base_url + "/chat/completions"
    return cpu_s_of([sys.executable, "-c", _BARE_CLIENT, url, str(concurrency), str(requests // concurrency),
                     str(MAX_TOKENS)])


def worker_cpu_s(redis_url: str, base_url: str, concurrency: int, requests: int, run: int) -> tuple[float, float]:
    """CPU seconds of the worker's process tree, and of the Redis meanwhile (the enqueue left out)."""
    queue = f"cost-{run}"
    endpoint = resolve_endpoint("openai", base_url, "mock-model", MAX_TOKENS)
    connection = connect(redis_url, "benchmark")
    enqueue_run(connection, endpoint, select_prompts(requests), queue_name=queue)
    redis_pid = int(connection.info("server")["process_id"])
    redis_before = process_cpu_s(redis_pid)
    worker = cpu_s_of([sys.executable, "-m", "tokenbench", "worker", "-n", "1", "--streams", str(concurrency),
                       "--queue", queue, "--redis-url", redis_url, "--burst", "--log-level", "WARNING", "--force"])
    return worker, process_cpu_s(redis_pid) - redis_before


def per_request_us(cpu: dict[int, float], short: int, long: int) -> float:
    return (cpu[long] - cpu[short]) / (long - short) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--requests", type=int, default=2000, help="N: each client runs N and 3N requests")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    short, long = args.requests, 3 * args.requests
    mock = launch_mock_server(["--ttft-ms", "20", "--itl-ms", "1", "--output-tokens", str(MAX_TOKENS)])
    try:
        base_url = mock_server_url(mock) + "/v1"
        with embedded_redis() as redis_url:
            bare, worker, redis_share = [], [], []
            for repeat in range(args.repeats):
                bare.append(per_request_us({n: bare_cpu_s(base_url, args.concurrency, n) for n in (short, long)},
                                           short, long))
                cpu = {n: worker_cpu_s(redis_url, base_url, args.concurrency, n, 2 * repeat + (n == long))
                       for n in (short, long)}
                worker.append(per_request_us({n: worker_s for n, (worker_s, _) in cpu.items()}, short, long))
                redis_share.append(per_request_us({n: redis_s for n, (_, redis_s) in cpu.items()}, short, long))
                print(f"repeat {repeat + 1}: bare {bare[-1]:.0f} us/request, tokenbench worker {worker[-1]:.0f} "
                      f"us/request ({worker[-1] / bare[-1]:.2f}x), its Redis {redis_share[-1]:.0f} us/request",
                      flush=True)
    finally:
        stop_child(mock)
    bare_us, worker_us, redis_us = (statistics.median(values) for values in (bare, worker, redis_share))
    print(f"C={args.concurrency}, {MAX_TOKENS}-token answers, median of {args.repeats}: bare client {bare_us:.0f} us "
          f"a request, tokenbench worker {worker_us:.0f} us ({worker_us / bare_us:.2f}x), its Redis {redis_us:.0f} us")


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"({time.monotonic() - started:.0f} s)")
