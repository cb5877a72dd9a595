"""The harness's overhead and capacity against the stamping mock, next to a bare aiohttp client.

For each concurrency level (default 1, 16, 64, 128; ITL 10 ms, 128 tokens) it runs `tokenbench
calibrate`'s measurement and prints, for tokenbench's workers and a bare asyncio aiohttp client in
the same process: receive lag per chunk (receive minus the mock's stamped send time) p50/p99,
TTFT error (measured minus configured) p50/p99, chunks/s, the machine's CPU busy share, and, for
tokenbench, the achieved concurrency and the idle gap between a worker's requests. The first
level whose p99 lag passes 1 ms marks this machine's capacity for sub-millisecond timing.

    python benchmarks/overhead.py [--levels 1,16,64,128] [--requests-per-worker 4]
"""

from __future__ import annotations

import argparse
import sys

from tokenbench.runner.calibrate import CalibrationSettings, calibrate, format_calibration, ms_text

LAG_TARGET_MS = 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,16,64,128")
    parser.add_argument("--requests-per-worker", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--itl-ms", type=float, default=10.0)
    args = parser.parse_args()
    settings = CalibrationSettings(levels=tuple(int(v) for v in args.levels.split(",")),
                                   requests_per_worker=args.requests_per_worker, tokens=args.tokens,
                                   itl_ms=args.itl_ms)
    levels = calibrate(settings, progress_stream=sys.stderr)
    print(format_calibration(levels, settings))
    print()
    print("  conc.  achieved  idle gap p50 / p99 (ms)  TTFT error p99: tokenbench / bare (ms)")
    for level in levels:
        gap = level["worker_idle_gap_ms"]
        ours, bare = level["tokenbench"]["ttft_error_ms"], level["bare_client"]["ttft_error_ms"]
        print(f"  {level['concurrency']:>5}  {level['mean_concurrency'] or 0:>8.1f}  "
              f"{ms_text(gap['p50']):>10} / {ms_text(gap['p99']):<10}  "
              f"{ms_text(ours['p99']):>10} / {ms_text(bare['p99'])}")
    over = [level for level in levels if (level["tokenbench"]["lag_ms"]["p99"] or 0) > LAG_TARGET_MS]
    if over:
        first = over[0]
        print(f"\np99 lag first passes {LAG_TARGET_MS:g} ms at concurrency {first['concurrency']} "
              f"({first['tokenbench']['chunk_rate']:,.0f} chunks/s)")
    else:
        print(f"\np99 lag stays under {LAG_TARGET_MS:g} ms at every level")


if __name__ == "__main__":
    main()
