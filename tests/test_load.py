"""Load: 5,000 requests on 64 worker processes against the mock, each with exactly one record.

Figures (wall time, worker memory) come from benchmarks/load.py and are in docs/failure-semantics.md.
"""

from __future__ import annotations

import pytest

from tests.helpers import load, tokenbench

pytestmark = pytest.mark.integration


@pytest.mark.timeout(400)
def test_5000_prompts_at_concurrency_64_yield_exactly_5000_records(redis_url, tmp_path):
    out = tmp_path / "load.json"
    result = tokenbench("run", "--mode", "mock", "--concurrency", "64", "--prompts", "5000", "--max-tokens", "8",
                        "--mock-ttft-ms", "5", "--mock-itl-ms", "2", "--redis-url", redis_url,
                        "--output", str(out), timeout=380)
    assert result.returncode == 0, result.stderr[-2000:]
    report = load(out)
    assert (report["num_prompts"], report["successful_runs"], report["failed_runs"]) == (5000, 5000, 0)
    assert report["complete"] is True and report["errors"] == {}
    assert sorted(r["index"] for r in report["results"]) == list(range(5000))
    assert len({(r["worker"], r["stream"]) for r in report["results"]}) == 64
    assert report["total_output_tokens"] == 5000 * 8
