"""A large `tokenbench run` against the built-in mock: wall time, records, and worker memory.

Runs `tokenbench run --mode mock` in a child process and samples every process it started twice a
second: resident (RSS) and unique (USS: private pages, what a worker really costs) memory. Prints
the wall time, the record counts and the peak memory per worker process.

    python benchmarks/load.py [--prompts 5000] [--concurrency 64] [--max-tokens 16]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson


def children_of(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def worker_processes(run_pid: int) -> list[int]:
    """The worker processes of a `tokenbench run`: children of its `tokenbench worker` pool process."""
    pools = [pid for pid in children_of(run_pid) if is_worker(pid)]
    return [worker for pool in pools for worker in children_of(pool)]


def memory_kib(pid: int) -> tuple[int, int] | None:
    """(RSS, USS) in KiB, or None once the process is gone."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    fields = {}
    for line in rollup.splitlines()[1:]:
        name, _, rest = line.partition(":")
        fields[name] = int(rest.split()[0])
    return fields["Rss"], fields["Private_Clean"] + fields["Private_Dirty"]


def is_worker(pid: int) -> bool:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"worker" in args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--ttft-ms", type=float, default=20)
    parser.add_argument("--itl-ms", type=float, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        started = time.monotonic()
        run = subprocess.Popen(
            [sys.executable, "-m", "tokenbench", "run", "--mode", "mock", "--concurrency", str(args.concurrency),
             "--prompts", str(args.prompts), "--max-tokens", str(args.max_tokens),
             "--mock-ttft-ms", str(args.ttft_ms), "--mock-itl-ms", str(args.itl_ms), "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        peaks: dict[int, tuple[int, int]] = {}  # worker pid -> (peak RSS, peak USS)
        while run.poll() is None:
            for pid in worker_processes(run.pid):
                if (mem := memory_kib(pid)) is not None:
                    rss, uss = peaks.get(pid, (0, 0))
                    peaks[pid] = (max(rss, mem[0]), max(uss, mem[1]))
            time.sleep(0.5)
        wall_s = time.monotonic() - started
        report = orjson.loads(out.read_bytes())

    workers = list(peaks.values())
    print(f"prompts {args.prompts}, concurrency {args.concurrency}, max_tokens {args.max_tokens}, "
          f"mock TTFT {args.ttft_ms:g} ms / ITL {args.itl_ms:g} ms")
    print(f"exit code {run.returncode}, wall {wall_s:.1f} s, run duration {report['duration_s']:.1f} s")
    print(f"records {len(report['results'])}, ok {report['successful_runs']}, failed {report['failed_runs']}, "
          f"missing {report['missing_runs']}, distinct indices {len({r['index'] for r in report['results']})}")
    if workers:
        rss = [m[0] / 1024 for m in workers]
        uss = [m[1] / 1024 for m in workers]
        print(f"worker processes sampled: {len(workers)}")
        print(f"peak RSS per worker: max {max(rss):.1f} MiB, mean {sum(rss) / len(rss):.1f} MiB")
        print(f"peak USS per worker: max {max(uss):.1f} MiB, mean {sum(uss) / len(uss):.1f} MiB")


if __name__ == "__main__":
    main()
