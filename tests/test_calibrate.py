"""The harness's own delay: worker idle gaps, the CPU-busy warning, and `tokenbench calibrate`."""

from __future__ import annotations

import time

import pytest

from tests.builders import make_record
from tests.helpers import load, tokenbench
from tokenbench.aggregator.concurrency import stream_gaps_ms, worker_idle_gaps_ms
from tokenbench.aggregator.table import format_summary
from tokenbench.runner.cpu import CpuSampler
from tokenbench.shared.records import JobSpec, RequestRecord


def timed(worker: str, start: float, elapsed_ms: float) -> RequestRecord:
    return make_record(0, [], worker=worker, started_at=start, elapsed_ms=elapsed_ms, success=False, error_type=None)


def test_idle_gaps_are_per_worker_between_one_end_and_the_next_send():
    spec = JobSpec(run_id="r", index=9, prompt_id="p", category="c", messages=[], endpoint={})
    died = RequestRecord.failure(spec, "a", "h", "worker_died", "gone", 11.0)  # no timings: no gap
    records = [timed("a", 10.0, 500), timed("a", 10.502, 100), timed("b", 10.1, 200), timed("b", 10.31, 50), died]
    assert [round(g, 6) for g in worker_idle_gaps_ms(records)] == [2.0, 10.0]


def test_stream_gaps_are_taken_in_each_streams_order_whatever_the_input_order():
    # Stream 1's requests come in reverse; stream 2 has one request, hence no gap.
    requests = [(1, 5.0, 6.0), (2, 0.0, 9.0), (1, 0.0, 4.5), (1, 6.25, 7.0)]
    assert [round(g, 6) for g in stream_gaps_ms(requests)] == [500.0, 250.0]
    assert stream_gaps_ms([]) == []


def test_cpu_busy_share_sees_a_busy_loop():
    sampler = CpuSampler()
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        pass
    assert 0 < sampler.busy_share() <= 1


def test_a_saturated_machine_is_named_in_the_table(tmp_path):
    from tests.test_reports import meta, record
    from tokenbench.aggregator.report import build_report

    report = build_report(meta(2), [record(0, 0.0, 100), record(1, 0.0, 100)])
    assert "CPUs were" not in format_summary(report)
    report["local_cpu"] = {"cores": 2, "busy_share": 0.97}
    table = format_summary(report)
    assert "this machine's CPUs were 97% busy during the run" in table
    assert max(len(line) for line in table.splitlines()) <= 80


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_calibrate_compares_tokenbench_with_a_bare_client(tmp_path):
    outcome = tokenbench("calibrate", "--concurrency", "1,4", "--requests-per-worker", "2", "--tokens", "24",
                         "--ttft-ms", "10", "--itl-ms", "4", "--output", str(tmp_path / "c.json"), timeout=150)
    assert outcome.returncode == 0, outcome.stderr
    levels = load(tmp_path / "c.json")["levels"]
    assert [level["concurrency"] for level in levels] == [1, 4]
    for level in levels:
        for client in ("tokenbench", "bare_client"):
            figures = level[client]
            assert figures["chunks"] == 24 * 2 * level["concurrency"]
            assert 0 < figures["lag_ms"]["p50"] < 20 and figures["lag_ms"]["p99"] >= figures["lag_ms"]["p50"]
            assert -1 < figures["ttft_error_ms"]["p50"] < 50
    assert "At concurrency 4 this machine adds p99" in outcome.stdout
    assert max(len(line) for line in outcome.stdout.splitlines()) <= 80
