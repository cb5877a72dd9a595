"""What tokenbench itself costs: start-up, enqueue rate, and the aggregator on a large run.

- start-up: `tokenbench run --mode mock` launched -> its first request sent (the earliest
  record's started_at, on the embedded Redis's clock, which is this host's), at concurrency 1 and 64;
- enqueue: `enqueue_run` of 10,000 prompts into a real redis-server (jobs/s);
- aggregator: `tokenbench report` (a separate process: read, compute, write the JSON) over
  100,000 records of 256 chunks each, stored straight into Redis: wall time and peak RSS.

Per-worker memory (RSS/USS) is measured by benchmarks/load.py.

    python benchmarks/costs.py [--records 100000] [--chunks 256] [--skip-aggregator]
"""

from __future__ import annotations

import argparse
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from tokenbench.producer.enqueue import enqueue_run
from tokenbench.producer.prompts import select_prompts
from tokenbench.runner.embedded_redis import embedded_redis
from tokenbench.shared import keys
from tokenbench.shared.endpoint import resolve_endpoint
from tokenbench.shared.records import RequestRecord, RunMeta
from tokenbench.shared.redis_conn import connect


def startup_s(concurrency: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        launched = time.time()
        subprocess.run([sys.executable, "-m", "tokenbench", "run", "--mode", "mock", "--prompts", str(concurrency),
                        "--concurrency", str(concurrency), "--max-tokens", "4", "--output", str(out)],
                       check=True, capture_output=True, timeout=300)
        first_sent = min(r["started_at"] for r in orjson.loads(out.read_bytes())["results"])
    return first_sent - launched


def enqueue_rate(count: int) -> float:
    endpoint = resolve_endpoint("openai", "http://127.0.0.1:9/v1", "m", 256)
    with embedded_redis() as url:
        connection = connect(url, "benchmark")
        started = time.perf_counter()
        enqueue_run(connection, endpoint, select_prompts(count), queue_name="costs")
        return count / (time.perf_counter() - started)


def aggregator(records: int, chunks: int) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of `tokenbench report` over ``records`` stored records."""
    rng = random.Random(0)
    with embedded_redis() as url, tempfile.TemporaryDirectory() as tmp:
        connection = connect(url, "benchmark")
        meta = RunMeta(run_id="costs", mode="openai", model="m", base_url="http://x/v1", max_tokens=chunks,
                       num_prompts=records, queue="costs", created_at=time.time(),
                       prompt_ids=[f"p{i}" for i in range(records)], tokenbench_version="bench")
        connection.set(keys.run_meta("costs"), meta.to_json())
        start = time.time()
        for first in range(0, records, 2000):
            with connection.pipeline(transaction=False) as pipe:
                for index in range(first, min(first + 2000, records)):
                    offsets, t = [], rng.uniform(20, 80)
                    for _ in range(chunks):
                        offsets.append(round(t, 3))
                        t += rng.uniform(5, 15)
                    record = RequestRecord(run_id="costs", index=index, prompt_id=f"p{index}", category="c",
                                           worker=f"h:{index % 64}", host="h", started_at=start + index * 0.01,
                                           success=True, ttft_ms=offsets[0], latency_ms=offsets[-1],
                                           elapsed_ms=offsets[-1] + 1, chunk_offsets_ms=offsets,
                                           output_tokens=chunks, http_status=200)
                    pipe.hset(keys.run_records("costs"), str(index), record.to_json())
                pipe.execute()
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tokenbench", "report", "costs", "--redis-url", url,
                        "--output", str(Path(tmp) / "r.json")], check=True, capture_output=True, timeout=1800)
        wall = time.perf_counter() - started
        peak = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before)
    return wall, peak / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--chunks", type=int, default=256)
    parser.add_argument("--enqueue", type=int, default=10_000)
    parser.add_argument("--skip-aggregator", action="store_true")
    args = parser.parse_args()
    for concurrency in (1, 64):
        print(f"start-up to first request, concurrency {concurrency}: {startup_s(concurrency):.2f} s", flush=True)
    print(f"enqueue {args.enqueue:,} prompts: {enqueue_rate(args.enqueue):,.0f} jobs/s", flush=True)
    if not args.skip_aggregator:
        wall, peak_mib = aggregator(args.records, args.chunks)
        print(f"report over {args.records:,} records x {args.chunks} chunks: {wall:.1f} s, "
              f"peak RSS {peak_mib:,.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
