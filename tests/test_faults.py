"""Faults injected for real (the mock server's fault switches, signals, a Redis restart) through real
worker processes: every failure is a record with its own type, within a stated bound.
"""

from __future__ import annotations

import pytest

from tests.helpers import load, tokenbench

pytestmark = pytest.mark.integration

# fault -> (the error type its requests must get, run flags that bound it)
FAULT_CASES = {
    "hang": ("ttft_timeout", ["--ttft-timeout", "1", "--idle-timeout", "0.5"]),
    "stall": ("idle_timeout", ["--ttft-timeout", "5", "--idle-timeout", "0.5"]),
    "drop": ("connection_closed", []),
    "garbage": ("malformed_chunk", []),
}


@pytest.mark.parametrize("fault", sorted(FAULT_CASES))
def test_each_server_fault_is_a_failed_record_of_its_own_type(fault, redis_url, tmp_path):
    error_type, flags = FAULT_CASES[fault]
    out = tmp_path / "r.json"
    result = tokenbench("run", "--mode", "mock", "--prompts", "4", "--concurrency", "2", "--max-tokens", "8",
                        "--mock-ttft-ms", "5", "--mock-itl-ms", "5", "--mock-fault", fault,
                        "--mock-fault-rate", "0.5", "--mock-fault-after", "2", "--redis-url", redis_url,
                        "--output", str(out), *flags)
    assert result.returncode == 0, result.stderr  # complete, and some requests succeeded
    report = load(out)
    assert (report["successful_runs"], report["failed_runs"], report["complete"]) == (2, 2, True)
    failed = [r for r in report["results"] if not r["success"]]
    assert {r["error_type"] for r in failed} == {error_type}
    assert report["errors"][error_type]["count"] == 2
    for record in failed:
        if fault == "hang":  # nothing at all: the TTFT deadline, not the 0.5 s idle one
            assert record["output_tokens"] == 0 and 1000 <= record["elapsed_ms"] < 1500
        else:  # the fault came after two tokens, which are still recorded
            assert record["output_tokens"] == 2
        if fault == "stall":
            assert 500 <= record["elapsed_ms"] - record["latency_ms"] < 1000
