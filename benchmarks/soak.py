"""Fault soak: many requests through every fault the mock has, and not one record lost, doubled or mistyped.

`tokenbench run` against the built-in mock with a mix of all its faults (each in turn, at
--fault-rate in all): hang, stall, drop, garbage, a mid-stream error, HTTP 500, 429 and 503.
It then checks that every request has exactly one record, that each fault's requests carry its
error type in the expected number, that every other request succeeded with all its tokens, and
prints the counts and how long it took.

    python benchmarks/soak.py [--prompts 5000] [--concurrency 64] [--fault-rate 0.02]
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from tokenbench.mock import FAULT_ERROR_TYPES, FAULTS

MAX_TOKENS = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--fault-rate", type=float, default=0.02)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="tokenbench-soak-")) / "soak.json"
    command = [sys.executable, "-m", "tokenbench", "run", "--mode", "mock", "--prompts", str(args.prompts),
               "--concurrency", str(args.concurrency), "--max-tokens", str(MAX_TOKENS), "--mock-ttft-ms", "5",
               "--mock-itl-ms", "2", "--mock-fault", ",".join(FAULTS), "--mock-fault-rate", str(args.fault_rate),
               "--mock-fault-after", "2", "--ttft-timeout", "2", "--idle-timeout", "1", "--max-error-rate", "1",
               "--output", str(out)]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    took = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"run failed ({done.returncode}): {done.stderr[-2000:]}")
    report = orjson.loads(out.read_bytes())
    results = report["results"]
    indices = collections.Counter(r["index"] for r in results)
    errors = collections.Counter(r["error_type"] for r in results if not r["success"])
    faulty = sum(int((n + 1) * args.fault_rate) > int(n * args.fault_rate) for n in range(args.prompts))
    expected = collections.Counter()
    for k in range(faulty):
        expected[FAULT_ERROR_TYPES[list(FAULTS)[k % len(FAULTS)]]] += 1
    ok = [r for r in results if r["success"]]
    checks = {
        "every request has exactly one record": len(results) == args.prompts and set(indices.values()) == {1}
        and set(indices) == set(range(args.prompts)),
        "complete, none missing": report["complete"] and report["missing_runs"] == 0,
        "each fault's requests carry its error type": errors == expected,
        "every other request succeeded with all its tokens": len(ok) == args.prompts - faulty
        and all(r["output_tokens"] == MAX_TOKENS for r in ok),
    }
    print(f"soak: {args.prompts} requests at concurrency {args.concurrency}, {faulty} faults "
          f"({args.fault_rate:.0%}, all {len(FAULTS)} kinds in turn), {took:.1f} s")
    print(f"  error types: {dict(sorted(errors.items()))}")
    print(f"  expected:    {dict(sorted(expected.items()))}")
    for name, passed in checks.items():
        print(f"  {'ok  ' if passed else 'FAIL'} {name}")
    if not all(checks.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
