"""Scale: does one host drive C streams at the server's real pace? tokenbench against a bare client.

For each concurrency C, against one mock (TTFT 200 ms, ITL 50 ms, 64 tokens: 3.35 s a request),
first a bare aiohttp client (runner/bare_client.py, in a process of its own) and then `tokenbench
run` (its worker processes x streams, a redis-server of this script's) send 4 x C measured
requests, 4 back to back per stream, after one warm-up request per stream. For each it prints:

- delivered / truth: output tokens per second over the measured requests (first send to last end)
  against what the mock delivers to C streams that never wait (C x 64 tokens every 3.35 s);
- mean concurrency over the middle of the run, as a share of C: requests in flight averaged over
  the window that starts one request time (3.35 s) after the first send and ends one request time
  before the last end, so that ramp-up and tail are left out;
- CPU seconds of the client's whole process tree (the worker pool, `run` itself; not the mock nor
  Redis), and the peak of the sum of its processes' USS;
- TTFT p50 error (measured minus 200 ms) and ITL p99;
- how long the mock waited for a CPU while the client ran (its threads' run-queue time, from
  /proc/PID/task/*/schedstat): the client's processes share the cores with the mock, and a mock
  that waits answers late, whichever client is measured.

With ``--stamp-send-time`` the mock writes into every chunk when it sent it, and the TTFT error is
split in two: the first chunk's receive lag (the client's own delay: kernel, scheduling, parsing)
and the rest, which happened before the mock sent the chunk (the request's way out of the client,
the mock's lateness in taking it up); and the closed loop's gap is measured at the wire as well:
per stream, from one request's last token received to the mock taking up the next (its first
token's send stamp less the 200 ms it waits). Each client's own "idle gap" (end to next send)
depends on where it starts a request's clock; the wire gap is measured alike for both.

    python benchmarks/scale.py [--levels 8,128,256,512,1024] [--mock-processes 1] [--stamp-send-time]
                               [--processes N] [--pin]

``--pin`` gives the mock a CPU of its own (the last one) and the clients and Redis the others, so that
what the client costs the mock's timing (the mock waiting for a CPU) is taken out of the comparison.

then the targets of the scale issue, each met or not. It takes about a minute a level.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import orjson

from tokenbench.aggregator.concurrency import stream_gaps_ms
from tokenbench.aggregator.stats import percentile
from tokenbench.runner.server_cpu import cpu_wait_ns, with_descendants

TTFT_MS, ITL_MS, TOKENS, ROUNDS = 200.0, 50.0, 64, 4
REQUEST_S = (TTFT_MS + (TOKENS - 1) * ITL_MS) / 1000


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tree_cpu_wait_s(root: int) -> float:
    """Seconds the threads of ``root`` and its descendants have waited for a CPU while runnable."""
    return sum(cpu_wait_ns(with_descendants({root})).values()) / 1e9


def process_cpu_s(pid: int) -> float:
    """CPU seconds a running process has used so far (its threads, not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_uss_bytes(root: int) -> int:
    """Sum of USS (private memory) of ``root`` and its descendants."""
    total = 0
    for pid in with_descendants({root}):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class PeakMemory:
    """Samples the sum of some process trees' USS every 0.5 s while any of their roots runs."""

    def __init__(self, processes: list[subprocess.Popen]) -> None:
        self.peak = 0
        self._processes = processes
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while any(process.poll() is None for process in self._processes):
            self.peak = max(self.peak, sum(tree_uss_bytes(process.pid) for process in self._processes))
            time.sleep(0.5)


def percentile_of(values: list[float], q: float) -> float | None:
    return percentile(sorted(values), q) if values else None


def figures(intervals: list[tuple[float, float]], ttfts_ms: list[float], itls_ms: list[float], tokens: int,
            concurrency: int, first_lags_ms: list[float] | None = None,
            wire_gaps_ms: list[float] | None = None) -> dict[str, float | None]:
    """The figures of one client at one level, from its requests' (send, end) in seconds; with the
    mock's send stamps, each request's first-chunk receive lag (in the order of ``ttfts_ms``) and the
    wire idle gaps."""
    lags = first_lags_ms if first_lags_ms and len(first_lags_ms) == len(ttfts_ms) else None  # every one stamped
    start, end = min(s for s, _ in intervals), max(e for _, e in intervals)
    truth = concurrency * TOKENS / REQUEST_S
    window = (start + REQUEST_S, end - REQUEST_S)
    span = window[1] - window[0]
    busy = sum(max(0.0, min(e, window[1]) - max(s, window[0])) for s, e in intervals)
    return {
        "delivered_share": tokens / (end - start) / truth,
        "middle_concurrency_share": busy / span / concurrency if span > 0 else None,
        "ttft_p50_error_ms": percentile_of(ttfts_ms, 50) - TTFT_MS if ttfts_ms else None,
        "itl_p50_ms": percentile_of(itls_ms, 50),
        "itl_p99_ms": percentile_of(itls_ms, 99),
        "duration_s": end - start,
        "first_chunk_lag_p50_ms": percentile_of(lags, 50) if lags else None,
        "ttft_p50_error_at_send_ms": percentile_of([t - lag for t, lag in zip(ttfts_ms, lags)], 50) - TTFT_MS
        if lags else None,
        "wire_idle_gap_p50_ms": percentile_of(wire_gaps_ms, 50) if wire_gaps_ms else None,
    }


def bare_client_main(url: str, concurrency: int, first_stream: int) -> None:
    """In its own process: the bare client's requests (its streams numbered from ``first_stream``),
    printed as JSON."""
    from tokenbench.runner.bare_client import bare_requests

    requests = asyncio.run(bare_requests(url, concurrency, ROUNDS, TOKENS))
    for request in requests:
        request.stream += first_stream
    sys.stdout.buffer.write(orjson.dumps(requests))


def bare_figures(requests: list[dict], concurrency: int) -> dict:
    """The bare client's figures, from the requests of all of its processes."""
    intervals = [(r["sent_ns"] / 1e9, r["ended_ns"] / 1e9) for r in requests]
    ttfts = [(r["token_received_ns"][0] - r["sent_ns"]) / 1e6 for r in requests if r["token_received_ns"]]
    first_lags = [(r["token_received_ns"][0] - r["token_sent_ns"][0]) / 1e6 for r in requests if r["token_sent_ns"]]
    itls = [(b - a) / 1e6 for r in requests for a, b in zip(r["token_received_ns"], r["token_received_ns"][1:])]
    tokens = sum(len(r["token_received_ns"]) for r in requests)
    wire_gaps = stream_gaps_ms([(r["stream"], r["token_sent_ns"][0] / 1e9 - TTFT_MS / 1000,
                                 r["token_received_ns"][-1] / 1e9) for r in requests if r["token_sent_ns"]])
    idle_gaps = stream_gaps_ms([(r["stream"], r["sent_ns"] / 1e9, r["ended_ns"] / 1e9) for r in requests])
    return figures(intervals, ttfts, itls, tokens, concurrency, first_lags, wire_gaps) | {
        "idle_gap_p50_ms": percentile_of(idle_gaps, 50)}


def measure(commands: list[list[str]]) -> tuple[list[subprocess.CompletedProcess], float, int]:
    """Run ``commands`` side by side; (their outcomes, CPU seconds of their trees, peak of the sum of
    their trees' USS, in bytes)."""
    cpu_before = children_cpu_s()
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for command in commands]
    memory = PeakMemory(processes)
    outcomes = []
    for command, process in zip(commands, processes):
        out, err = process.communicate(timeout=900)
        outcomes.append(subprocess.CompletedProcess(command, process.returncode, out, err))
    return outcomes, children_cpu_s() - cpu_before, memory.peak


def run_bare(url: str, concurrency: int, processes: int) -> dict:
    """The bare client's figures, its streams spread over ``processes`` processes run side by side."""
    shares = [concurrency // processes + (number < concurrency % processes) for number in range(processes)]
    firsts = [sum(shares[:number]) for number in range(processes)]
    outcomes, cpu, uss = measure([[sys.executable, __file__, "--bare-client", url, str(share), str(first)]
                                  for share, first in zip(shares, firsts) if share])
    for outcome in outcomes:
        if outcome.returncode != 0:
            raise SystemExit(f"bare client failed: {outcome.stderr.decode()[-2000:]}")
    requests = [request for outcome in outcomes for request in orjson.loads(outcome.stdout)]
    return bare_figures(requests, concurrency) | {"cpu_s": cpu, "uss_mib": uss / 2**20,
                                                  "processes": len(outcomes)}


def run_tokenbench(url: str, redis_url: str, concurrency: int, workdir: Path, processes: int | None) -> dict:
    out = workdir / f"tokenbench-{concurrency}.json"
    (outcome,), cpu, uss = measure([[sys.executable, "-m", "tokenbench", "run", "--mode", "openai", "--base-url", url,
                                 "--model", "mock-model", "--max-tokens", str(TOKENS), "--redis-url", redis_url,
                                 "--concurrency", str(concurrency), "--prompts", str(ROUNDS * concurrency),
                                 "--warmup", "1", "--output", str(out),
                                 *(["--processes", str(processes)] if processes else [])]])
    if outcome.returncode != 0:
        raise SystemExit(f"tokenbench run failed: {outcome.stderr.decode()[-2000:]}")
    report = orjson.loads(out.read_bytes())
    ok = [r for r in report["results"] if r["success"]]
    intervals = [(r["started_at"], r["started_at"] + r["elapsed_ms"] / 1000) for r in ok]
    ttfts = [r["ttft_ms"] for r in ok]
    first_lags = [r["chunk_lag_ms"][0] for r in ok if r.get("chunk_lag_ms")]
    itls = [b - a for r in ok for a, b in zip(r["chunk_offsets_ms"], r["chunk_offsets_ms"][1:])]
    wire_gaps = stream_gaps_ms([
        ((r["worker"], r["stream"]), r["started_at"] + (r["ttft_ms"] - r["chunk_lag_ms"][0] - TTFT_MS) / 1000,
         r["started_at"] + r["latency_ms"] / 1000) for r in ok if r.get("chunk_lag_ms")])
    return figures(intervals, ttfts, itls, report["total_output_tokens"], concurrency, first_lags, wire_gaps) | {
        "cpu_s": cpu, "uss_mib": uss / 2**20, "failed": report["failed_runs"],
        "loop_lag_p99_ms": (report.get("event_loop_lag_ms") or {}).get("p99"),
        "idle_gap_p50_ms": (report.get("worker_idle_gap_ms") or {}).get("p50"),
        "processes": len(report["workers"]),
    }


def with_server_load(mock_pid: int, redis_pid: int, run: Callable[[], dict]) -> dict:
    """``run()``'s figures, with how long the mock waited for a CPU meanwhile, and the CPU seconds
    that the mock and Redis used (the bare client uses no Redis)."""
    wait_before, mock_before = tree_cpu_wait_s(mock_pid), process_cpu_s(mock_pid)
    redis_before = process_cpu_s(redis_pid)
    return run() | {"mock_cpu_wait_s": tree_cpu_wait_s(mock_pid) - wait_before,
                    "mock_cpu_s": process_cpu_s(mock_pid) - mock_before,
                    "redis_cpu_s": process_cpu_s(redis_pid) - redis_before}


def start_mock(processes: int, stamp_send_time: bool, cpus: set[int] | None) -> tuple[list[subprocess.Popen], str]:
    """The mock (on ``cpus`` only, if given) and its base URL."""
    first = subprocess.Popen([sys.executable, "-m", "tokenbench", "mock-server", "--port", "0", "--ttft-ms",
                              str(TTFT_MS), "--itl-ms", str(ITL_MS), "--output-tokens", str(TOKENS),
                              *(["--processes", str(processes)] if processes > 1 else []),
                              *(["--stamp-send-time"] if stamp_send_time else [])],
                             stdout=subprocess.PIPE, text=True,
                             preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    url = first.stdout.readline().split("listening on ")[1].strip()
    return [first], url


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--bare-client":
        bare_client_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="8,128,256,512,1024")
    parser.add_argument("--mock-processes", type=int, default=1)
    parser.add_argument("--stamp-send-time", action="store_true",
                        help="the mock stamps its chunks: split the TTFT error at the mock's send")
    parser.add_argument("--processes", type=int, help="tokenbench's worker processes (default: its own, one a core)")
    parser.add_argument("--bare-processes", type=int, default=1,
                        help="the bare client's processes, its streams spread over them (default 1)")
    parser.add_argument("--pin", action="store_true",
                        help="the mock on the last CPU, everything else (both clients, Redis) on the others")
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    cpus = sorted(os.sched_getaffinity(0))
    if args.pin and len(cpus) < 2:
        raise SystemExit("--pin needs at least 2 CPUs")
    mocks, url = start_mock(args.mock_processes, args.stamp_send_time, {cpus[-1]} if args.pin else None)
    if args.pin:
        os.sched_setaffinity(0, set(cpus[:-1]))  # inherited by Redis and both clients
    workdir = Path(tempfile.mkdtemp(prefix="tokenbench-scale-"))
    redis = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", "0", "--unixsocket",
                              str(workdir / "redis.sock"), "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL)
    redis_url = f"unix://{workdir / 'redis.sock'}"
    time.sleep(0.5)
    rows = []
    try:
        for level in levels:
            print(f"concurrency {level}: bare client ...", file=sys.stderr, flush=True)
            bare = with_server_load(mocks[0].pid, redis.pid, partial(
                run_bare, url + "/v1/chat/completions", level, args.bare_processes))
            print(f"concurrency {level}: tokenbench ...", file=sys.stderr, flush=True)
            ours = with_server_load(mocks[0].pid, redis.pid, partial(
                run_tokenbench, url + "/v1", redis_url, level, workdir, args.processes))
            rows.append((level, bare, ours))
            print_rows(rows)
    finally:
        for process in [*mocks, redis]:
            process.terminate()
            process.wait(10)
    print_targets(rows)


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_rows(rows: list[tuple[int, dict, dict]]) -> None:
    print("\n|    C | client | delivered/truth | mean conc. (middle)/C | CPU s | USS MiB | TTFT p50 err ms "
          "| of it at the mock's send | 1st chunk lag p50 ms | ITL p99 ms | loop lag p99 ms | idle gap p50 ms "
          "| wire idle gap p50 ms | mock CPU wait s | mock CPU s | Redis CPU s |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for level, bare, ours in rows:
        for name, entry in ((f"bare aiohttp ({bare['processes']} proc.)", bare),
                            (f"tokenbench ({ours['processes']} proc.)", ours)):
            print(f"| {level} | {name} | {_f(entry['delivered_share'])} | {_f(entry['middle_concurrency_share'])} "
                  f"| {_f(entry['cpu_s'], 1)} | {_f(entry['uss_mib'], 0)} | {_f(entry['ttft_p50_error_ms'])} "
                  f"| {_f(entry['ttft_p50_error_at_send_ms'])} | {_f(entry['first_chunk_lag_p50_ms'])} "
                  f"| {_f(entry['itl_p99_ms'])} | {_f(entry.get('loop_lag_p99_ms'))} "
                  f"| {_f(entry.get('idle_gap_p50_ms'))} | {_f(entry['wire_idle_gap_p50_ms'])} "
                  f"| {_f(entry['mock_cpu_wait_s'])} | {_f(entry['mock_cpu_s'], 1)} | {_f(entry['redis_cpu_s'], 1)} |")
    sys.stdout.flush()


def print_targets(rows: list[tuple[int, dict, dict]]) -> None:
    by_level = {level: (bare, ours) for level, bare, ours in rows}
    checks = []
    for level, floor in ((256, 0.97), (512, 0.93)):
        if level in by_level:
            bare, ours = by_level[level]
            checks.append((f"C={level}: delivered/truth >= {floor} (bare client: {_f(bare['delivered_share'])})",
                           ours["delivered_share"] >= floor, _f(ours["delivered_share"])))
    for level, (bare, ours) in by_level.items():
        share = ours["middle_concurrency_share"]
        checks.append((f"C={level}: mean concurrency over the middle >= 0.97 C (bare: "
                       f"{_f(bare['middle_concurrency_share'])})", share is not None and share >= 0.97, _f(share)))
    for level, (_bare, ours) in by_level.items():
        gap = ours.get("idle_gap_p50_ms")
        checks.append((f"C={level}: closed loop, worker_idle_gap_ms p50 <= ~1 ms (streams ending together "
                       "wait for one another and, beyond the 32 started ahead, for the feeder)",
                       gap is not None and gap <= 1.0, _f(gap)))
    if 8 in by_level:
        bare, ours = by_level[8]
        ttft_gap = abs(ours["ttft_p50_error_ms"] - bare["ttft_p50_error_ms"])
        checks.append((f"C=8: TTFT p50 within 1.5 ms of the bare client's ({_f(bare['ttft_p50_error_ms'])} ms "
                       "error)", ttft_gap <= 1.5, _f(ours["ttft_p50_error_ms"])))
        checks.append((f"C=8: ITL p50 within 0.1 ms of the bare client's ({_f(bare['itl_p50_ms'], 3)} ms)",
                       abs(ours["itl_p50_ms"] - bare["itl_p50_ms"]) <= 0.1, _f(ours["itl_p50_ms"], 3)))
    for level in (128, 512):
        if level in by_level:
            bare, ours = by_level[level]
            checks.append((f"C={level}: CPU <= 2x the bare client's ({_f(bare['cpu_s'], 1)} s)",
                           ours["cpu_s"] <= 2 * bare["cpu_s"], f"{ours['cpu_s']:.1f} s"))
    if 512 in by_level:
        ours = by_level[512][1]
        checks.append(("C=512: memory (sum of USS) <= 600 MiB", ours["uss_mib"] <= 600, f"{ours['uss_mib']:.0f} MiB"))
    if 256 in by_level:
        bare, ours = by_level[256]
        checks.append((f"C=256: TTFT p50 error <= bare + 5 ms ({_f(bare['ttft_p50_error_ms'])} ms)",
                       ours["ttft_p50_error_ms"] <= bare["ttft_p50_error_ms"] + 5, _f(ours["ttft_p50_error_ms"])))
    for level, (bare, ours) in by_level.items():
        checks.append((f"C={level}: ITL p99 <= 1.5x bare ({_f(bare['itl_p99_ms'])} ms)",
                       ours["itl_p99_ms"] <= 1.5 * bare["itl_p99_ms"], _f(ours["itl_p99_ms"])))
    if 1024 in by_level:
        ours = by_level[1024][1]
        checks.append(("C=1024 completes with no failed request", ours["failed"] == 0, f"{ours['failed']} failed"))
    print("\ntargets")
    for text, met, figure in checks:
        print(f"  {'met    ' if met else 'NOT MET'}  {text}: {figure}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
