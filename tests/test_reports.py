"""Report pieces people act on: achieved concurrency, categories, CSV, compare verdicts, warm-up."""

from __future__ import annotations

import csv
import io
import random
from dataclasses import replace

import orjson
import pytest

from tests.builders import make_meta, make_record
from tests.helpers import load, tokenbench
from tokenbench.aggregator.compare import (
    bootstrap_interval,
    compare,
    comparison_warnings,
    regressions,
    verdict,
    worse_by_at_least_pct,
)
from tokenbench.aggregator.concurrency import achieved_concurrency
from tokenbench.aggregator.export import results_csv
from tokenbench.aggregator.report import build_report, category_breakdown
from tokenbench.aggregator.table import format_summary
from tokenbench.shared.records import RequestRecord, RunMeta


def record(index: int, start: float, elapsed_ms: float, category: str = "c", success: bool = True,
           ttft: float = 50.0) -> RequestRecord:
    return make_record(index, [ttft, elapsed_ms], category=category, worker=f"h:{index % 2}", started_at=start,
                       success=success, elapsed_ms=elapsed_ms, output_tokens=10, error_type=None,
                       output_tokens_source="chunks")


def meta(n: int, concurrency: int | None = None) -> RunMeta:
    return make_meta(n, max_tokens=10, created_at=0.0, requested_concurrency=concurrency)


def test_achieved_concurrency_is_time_weighted_and_peaks_at_the_most_overlap():
    # 0-2 s and 1-3 s overlap for one second; 3-4 s starts as the second ends.
    mean, peak = achieved_concurrency([(0.0, 2.0), (1.0, 3.0), (3.0, 4.0)])
    assert mean == pytest.approx(5 / 4) and peak == 2
    assert achieved_concurrency([]) == (None, 0)


def test_a_run_far_below_its_workers_says_so():
    sequential = [record(i, start=float(i), elapsed_ms=1000) for i in range(4)]  # one at a time on 4 workers
    report = build_report(meta(4, concurrency=4), sequential)
    assert (report["mean_concurrency"], report["max_concurrency"]) == (1.0, 1)
    assert "only 1.0 of 4 requests were in flight on average" in format_summary(report)
    parallel = [record(i, start=0.0, elapsed_ms=1000) for i in range(4)]
    assert "warning" not in format_summary(build_report(meta(4, concurrency=4), parallel))
    # Fewer in flight by design: a ramp-up still in the figures, or think time between turns.
    ramping = build_report(replace(meta(4, concurrency=4), ramp_up_s=4.0), sequential)
    assert "only 1.0 of 4" not in format_summary(ramping)
    thinking = build_report(replace(meta(4, concurrency=4), workload={"conversations": {"turn_delay_s": 1.0}}),
                            sequential)
    assert "only 1.0 of 4" not in format_summary(thinking)
    # A ShareGPT sample's workload counts the file's conversations: a number, not a multi-turn summary.
    sharegpt = build_report(replace(meta(4, concurrency=4),
                                    workload={"source": "sharegpt", "conversations": 120, "usable": 80}), sequential)
    assert "only 1.0 of 4 requests were in flight on average" in format_summary(sharegpt)


def test_categories_count_successes_and_ttft():
    records = [record(0, 0, 100, "a", ttft=10), record(1, 0, 100, "a", ttft=30), record(2, 0, 100, "b", False)]
    breakdown = category_breakdown(records)
    assert breakdown["a"] == {"requests": 2, "successful": 2, "success_rate": 1.0, "ttft_p50_ms": 20.0,
                              "ttft_p95_ms": 29.0, "tokens_per_second": 100.0}
    assert (breakdown["b"]["successful"], breakdown["b"]["success_rate"], breakdown["b"]["ttft_p50_ms"]) == (0, 0, None)


def test_csv_has_one_row_per_request_with_every_field():
    report = build_report(meta(2), [record(0, 0, 100), record(1, 0, 200, success=False)])
    rows = list(csv.DictReader(io.StringIO(results_csv(report))))
    assert len(rows) == 2 and set(report["results"][0]) | {"run_id"} == set(rows[0])
    assert orjson.loads(rows[0]["chunk_offsets_ms"]) == [50.0, 100]
    assert (rows[1]["success"], rows[1]["run_id"]) == ("False", "r")


def test_a_sweeps_csv_has_one_header_even_when_a_level_has_no_records():
    empty = build_report(meta(2), [])
    full = build_report(meta(2), [record(0, 0, 100), record(1, 0, 200)])
    full["run_id"] = "r2"
    text = results_csv(empty, full, full)
    assert text.count("run_id,index") == 1
    assert [row["run_id"] for row in csv.DictReader(io.StringIO(text))] == ["r2"] * 4


def test_verdicts_need_the_whole_interval_beyond_zero_and_beyond_one_percent():
    assert verdict((-1.0, 2.0), 100, higher_is_better=False) == "within noise"
    assert verdict((0.5, 2.0), 100, higher_is_better=False) == "within noise"  # may be under 1 %
    assert verdict((1.5, 2.0), 100, higher_is_better=False) == "slower"
    assert verdict((-3.0, -1.5), 100, higher_is_better=False) == "faster"
    assert verdict((-3.0, -1.5), 100, higher_is_better=True) == "slower"


def test_bootstrap_separates_a_real_shift_from_noise_and_is_reproducible():
    rng = random.Random(1)
    base = [rng.gauss(100, 10) for _ in range(300)]
    same = rng.sample(base, len(base))  # the same values in another order
    shifted = [v + 10 for v in same]
    low, high = bootstrap_interval(base, same, 50, random.Random(7))
    assert low <= 0 <= high
    low, high = bootstrap_interval(base, shifted, 50, random.Random(7))
    assert 5 < low < high < 15
    assert bootstrap_interval(base, shifted, 50, random.Random(7)) == (low, high)


def test_compare_rows_from_two_reports():
    fast = build_report(meta(40), [record(i, 0, 100 + i % 5, ttft=50 + i % 3) for i in range(40)])
    slow = build_report(meta(40), [record(i, 0, 130 + i % 5, ttft=80 + i % 3) for i in range(40)])
    rows = {row["metric"]: row for row in compare(fast, slow)}
    assert rows["TTFT p50 (ms)"]["verdict"] == "slower" and rows["TTFT p50 (ms)"]["ratio"] == pytest.approx(81 / 51,
                                                                                                          abs=1e-3)
    assert rows["tok/s p50"]["verdict"] == "slower"
    assert {row["verdict"] for row in compare(fast, fast)} <= {"within noise", "one value per run: no test"}


def test_how_much_worse_at_the_least_and_the_regression_gate():
    assert worse_by_at_least_pct((20.0, 40.0), 100.0, higher_is_better=False) == 20.0  # latency up 20-40 ms
    assert worse_by_at_least_pct((-5.0, 40.0), 100.0, higher_is_better=False) == 0.0  # could be no change
    assert worse_by_at_least_pct((-30.0, -10.0), 100.0, higher_is_better=True) == 10.0  # tokens/s down 10-30
    assert worse_by_at_least_pct((-30.0, -10.0), 100.0, higher_is_better=False) == 0.0  # latency down: better
    fast = build_report(meta(40), [record(i, 0, 100 + i % 5, ttft=50 + i % 3) for i in range(40)])
    slow = build_report(meta(40), [record(i, 0, 130 + i % 5, ttft=80 + i % 3) for i in range(40)])
    rows = compare(fast, slow)
    assert {row["metric"] for row in regressions(rows, 20)} >= {"TTFT p50 (ms)", "E2EL p50 (ms)"}
    assert regressions(rows, 100) == [] and regressions(compare(fast, fast), 0) == []


def test_compare_warns_about_different_workloads_and_unfinished_runs_and_keeps_the_baseline():
    base = build_report(meta(40, concurrency=4), [record(i, 0, 100 + i % 5) for i in range(40)])
    down = build_report(meta(40, concurrency=8), [record(i, 0, 100, success=False) for i in range(30)],
                        missing=list(range(30, 40)), interrupted=True, interrupted_reason="Ctrl-C or SIGTERM")
    assert comparison_warnings(base, down) == [
        "the runs differ in concurrency: 4 vs 8",
        "the other run is incomplete: 10 of 40 requests have no record (Ctrl-C or SIGTERM)",
        "the other run has no successful request",
    ]
    assert comparison_warnings(base, base) == []
    rows = {row["metric"]: row for row in compare(base, down)}
    assert rows["TTFT p50 (ms)"]["baseline"] == 50.0 and rows["TTFT p50 (ms)"]["other"] is None
    assert rows["TTFT p50 (ms)"]["verdict"] == "no data"


@pytest.mark.integration
def test_warmup_csv_and_compare_from_the_command_line(redis_url, tmp_path):
    def run(name: str, ttft: str) -> dict:
        result = tokenbench("run", "--mode", "mock", "--prompts", "24", "--concurrency", "2", "--max-tokens", "8",
                            "--mock-ttft-ms", ttft, "--mock-itl-ms", "10", "--warmup", "1", "--redis-url", redis_url,
                            "--output", str(tmp_path / f"{name}.json"), "--csv", str(tmp_path / f"{name}.csv"))
        assert result.returncode == 0, result.stderr
        return load(tmp_path / f"{name}.json")

    report = run("a", "20")
    assert report["warmup_requests"] == 2 and all(r["warmup"] for r in report["warmup_results"])
    assert report["successful_runs"] == 24 and not any(r["warmup"] for r in report["results"])
    assert len({r["worker"] for r in report["warmup_results"]}) == 2  # one per worker
    rows = list(csv.DictReader(io.StringIO((tmp_path / "a.csv").read_text())))
    assert len(rows) == 26 and sum(row["warmup"] == "True" for row in rows) == 2
    assert sum(entry["requests"] for entry in report["categories"].values()) == 24
    # ~100 ms requests: the few ms RQ spends between jobs show up here.
    assert 1.0 < report["mean_concurrency"] <= 2 and report["max_concurrency"] == 2
    run("b", "40")
    compared = tokenbench("compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                          "--output", str(tmp_path / "c.json"))
    assert compared.returncode == 0, compared.stderr
    assert max(len(line) for line in compared.stdout.splitlines()) <= 80
    rows = {row["metric"]: row for row in load(tmp_path / "c.json")[0]["metrics"]}
    assert rows["TTFT p50 (ms)"]["verdict"] == "slower"  # 40 ms against 20 ms
    assert load(tmp_path / "c.json")[0]["warnings"] == [] and "warning" not in compared.stderr
    gate = tokenbench("compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--fail-on-regression", "10")
    assert gate.returncode == 1
    assert gate.stderr.startswith("tokenbench: error: regression beyond 10% (--fail-on-regression): TTFT p50 (ms) "
                                  "of b.json is worse by at least ")
    assert tokenbench("compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                      "--fail-on-regression", "900").returncode == 0


def test_cached_tokens_add_up_and_their_share_counts_only_requests_that_say():
    records = [record(i, 0, 100) for i in range(3)]
    records[0].input_tokens, records[0].cached_tokens = 100, 64
    records[1].input_tokens, records[1].cached_tokens = 100, 0
    records[2].input_tokens = 300  # a server that does not say what it cached
    report = build_report(meta(3), records)
    assert (report["total_cached_tokens"], report["cached_token_share"]) == (64, 0.32)
    assert [r["cached_tokens"] for r in report["results"]] == [64, 0, None]
    silent = build_report(meta(1), [record(0, 0, 100)])
    assert (silent["total_cached_tokens"], silent["cached_token_share"]) == (None, None)


def test_a_result_entry_holds_every_field_of_its_record_and_its_derived_metrics():
    from dataclasses import fields

    from tokenbench.aggregator.report import result_entry
    from tokenbench.shared.records import RequestRecord

    record = RequestRecord(run_id="r", index=3, prompt_id="p", category="c", worker="w", host="h", started_at=1.0,
                           success=True, ttft_ms=10.0, latency_ms=30.0, elapsed_ms=31.0,
                           chunk_offsets_ms=[10.0, 20.0, 30.0], output_tokens=3, chunk_tokens=[1, 1, 1],
                           chunk_tokens_source="usage", output_text="never in a result")
    entry = result_entry(record)
    assert set(entry) == {f.name for f in fields(RequestRecord)} - {"run_id", "output_text"} | \
        {"tpot_ms", "tokens_per_second", "itl_source"}
    assert entry["chunk_tokens_source"] == "usage" and entry["tpot_ms"] == 10.0 and entry["index"] == 3
