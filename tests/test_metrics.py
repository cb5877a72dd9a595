"""The result document, from hand-made records with known answers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.builders import make_meta, make_record
from tokenbench.aggregator.report import build_report
from tokenbench.aggregator.request_metrics import (
    inter_chunk_gaps_ms,
    inter_token_latencies_ms,
    pooled_inter_chunk_gaps_ms,
    pooled_inter_token_latencies_ms,
    tpot_ms,
)
from tokenbench.shared.records import RequestRecord, RunMeta, parse_stored_records

SEED_KEYS = ["mode", "concurrency", "num_prompts", "successful_runs", "avg_latency_ms",
             "avg_tokens_per_second", "p50_latency_ms", "p95_latency_ms", "results"]


def meta(n: int, concurrency: int | None = None) -> RunMeta:
    return make_meta(n, run_id="r1", max_tokens=4, requested_concurrency=concurrency)


def record(index: int, offsets: list[float], started_at: float, worker: str = "h:1", **kw) -> RequestRecord:
    return make_record(index, offsets, **{"run_id": "r1", "worker": worker, "started_at": started_at,
                                          "input_tokens": 10, **kw})


def test_tpot_and_itl_of_one_request():
    r = record(0, [100.0, 110.0, 130.0, 160.0], 0.0)
    assert tpot_ms(r) == pytest.approx((160 - 100) / 3)
    assert inter_token_latencies_ms(r) == [10.0, 20.0, 30.0]
    assert tpot_ms(record(0, [50.0], 0.0)) is None  # one token: no TPOT


def test_report_by_hand():
    records = [
        record(0, [100.0, 110.0, 130.0, 160.0], started_at=1000.0, worker="h:1"),
        record(1, [200.0, 220.0], started_at=1000.5, worker="h:2"),
        RequestRecord(run_id="r1", index=2, prompt_id="p2", category="c", worker="h:2", host="h",
                      started_at=1001.0, success=False, error_type="http_error", error="HTTP 500: boom",
                      elapsed_ms=1500.0),
    ]
    report = build_report(meta(4), records, missing=[3])
    assert list(report)[: len(SEED_KEYS) - 1] == SEED_KEYS[:-1]
    assert "results" in report
    assert report["concurrency"] == 2  # no requested concurrency: distinct workers in the records
    assert report["successful_runs"] == 2 and report["failed_runs"] == 1 and report["missing_runs"] == 1
    assert report["complete"] is False
    assert report["missing"] == [{"index": 3, "prompt_id": "p3"}]
    assert report["avg_latency_ms"] == 190.0  # (160 + 220) / 2
    assert report["ttft_ms"]["mean"] == 150.0
    assert report["itl_ms"]["p50"] == 20.0  # pooled gaps 10, 20, 30, 20
    assert report["tpot_ms"]["mean"] == pytest.approx((20 + 20) / 2)
    # per-request tokens/s: 4 / 0.16 = 25 and 2 / 0.22 = 9.0909
    assert report["avg_tokens_per_second"] == pytest.approx((25 + 2 / 0.22) / 2, abs=1e-3)
    # run from 1000.0 to the failed request's end 1001.0 + 1.5 s: 2.5 s
    assert report["duration_s"] == 2.5
    assert report["total_output_tokens"] == 6
    assert report["output_throughput_tokens_per_s"] == pytest.approx(6 / 2.5)
    assert report["request_throughput_per_s"] == pytest.approx(2 / 2.5)
    assert report["total_input_tokens"] == 20
    assert report["errors"] == {"http_error": {"count": 1, "example": "HTTP 500: boom"}}
    assert [r["index"] for r in report["results"]] == [0, 1, 2]
    assert report["results"][0]["tokens_per_second"] == 25.0


def test_requested_concurrency_wins_and_empty_run_has_no_numbers():
    report = build_report(meta(1, concurrency=8), [], missing=[0])
    assert report["concurrency"] == 8
    assert report["avg_latency_ms"] is None and report["output_throughput_tokens_per_s"] is None
    assert report["ttft_ms"]["p99"] is None


def _timed_record(offsets: list[float], chunk_tokens: list[int] | None) -> RequestRecord:
    return RequestRecord(run_id="r", index=0, prompt_id="p", category="c", worker="w", host="h", started_at=0.0,
                         success=True, chunk_offsets_ms=offsets, chunk_tokens=chunk_tokens)


@given(st.lists(st.tuples(st.lists(st.floats(0.001, 50), max_size=6), st.booleans()), max_size=8))
def test_pooled_gaps_are_every_records_gaps_concatenated(shapes):
    records = []
    for steps, with_tokens in shapes:
        offsets = [sum(steps[:i + 1]) for i in range(len(steps))]
        records.append(_timed_record(offsets, [1 + i % 3 for i in range(len(offsets))] if with_tokens else None))
    plain = [r for r in records if r.chunk_tokens is None]
    expected_gaps = [g for r in plain for g in inter_chunk_gaps_ms(r)]
    assert pooled_inter_chunk_gaps_ms(plain).tolist() == pytest.approx(expected_gaps)
    read_back = parse_stored_records([r.to_json() for r in plain])  # offsets as views of one array
    assert pooled_inter_chunk_gaps_ms(read_back).tolist() == pytest.approx(expected_gaps)
    expected_itl = sorted(x for r in records for x in inter_token_latencies_ms(r))
    assert sorted(pooled_inter_token_latencies_ms(records).tolist()) == pytest.approx(expected_itl)
