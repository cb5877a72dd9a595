"""Goodput (vLLM's definition): requests per second that meet every objective given."""

from __future__ import annotations

import pytest

from tests.builders import make_record
from tokenbench.aggregator.goodput import meets_slo, parse_slo
from tokenbench.aggregator.report import build_report
from tokenbench.shared.records import RequestRecord, RunMeta


def test_parse_slo_accepts_any_subset():
    assert parse_slo("ttft=500, tpot=50,e2el=1e4") == {"ttft": 500.0, "tpot": 50.0, "e2el": 10000.0}
    assert parse_slo("TPOT=12.5") == {"tpot": 12.5}


@pytest.mark.parametrize("text, message", [
    ("ttft", "is not METRIC=MS"),
    ("ttft=abc", "'abc' is not a number"),
    ("itl=5", "unknown metric 'itl'"),
    ("ttft=0", "above 0"),
    ("ttft=nan", "above 0"),
])
def test_parse_slo_rejects_malformed_objectives(text, message):
    with pytest.raises(ValueError, match=message):
        parse_slo(text)


def record(index: int, ttft: float, latency: float, tokens: int, success: bool = True) -> RequestRecord:
    return make_record(index, [], success=success, ttft_ms=ttft, latency_ms=latency, elapsed_ms=latency,
                       output_tokens=tokens, output_tokens_source="chunks", error_type=None)


def test_a_request_is_good_only_when_it_succeeded_and_meets_every_objective():
    slo = {"ttft": 100.0, "tpot": 10.0}
    assert meets_slo(record(0, ttft=100, latency=190, tokens=10), slo)  # TPOT exactly 10
    assert not meets_slo(record(0, ttft=101, latency=190, tokens=10), slo)
    assert not meets_slo(record(0, ttft=50, latency=200, tokens=10), slo)  # TPOT 16.7
    assert meets_slo(record(0, ttft=50, latency=50, tokens=1), slo)  # one token: TPOT 0, as vLLM
    assert not meets_slo(record(0, ttft=50, latency=60, tokens=2, success=False), slo)


def test_report_counts_goodput_over_the_run_s_duration():
    meta = RunMeta(run_id="r", mode="mock", model="m", base_url="http://x/v1", max_tokens=10, num_prompts=4,
                   queue="q", created_at=1000.0, prompt_ids=["p0", "p1", "p2", "p3"], tokenbench_version="t")
    records = [record(0, 50, 140, 10), record(1, 150, 240, 10), record(2, 50, 140, 10),
               record(3, 50, 140, 10, success=False)]
    report = build_report(meta, records, slo={"ttft": 100.0})
    duration = report["duration_s"]  # first start 1000.0 to last end 1003.14
    assert duration == pytest.approx(3.14)
    assert (report["good_requests"], report["slo_attainment"]) == (2, 0.5)
    assert report["goodput_requests_per_s"] == pytest.approx(2 / duration, abs=1e-3)
    assert report["slo_ms"] == {"ttft": 100.0}
    assert build_report(meta, records)["goodput_requests_per_s"] is None
