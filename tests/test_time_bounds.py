"""Runs bounded by time: --duration (prompts cycle to a cap), --ramp-up, --measure-after."""

from __future__ import annotations

import pytest
import redis

from tests.builders import make_meta, make_record
from tests.helpers import load, tokenbench, tokenbench_in_process
from tokenbench.aggregator.report import build_report
from tokenbench.producer.time_bounds import TimeBounds, parse_span
from tokenbench.shared.records import RequestRecord


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("1.5m", 90), ("2h", 7200), (" 3 s", 3)])
def test_spans_are_seconds_minutes_or_hours(text, seconds):
    assert parse_span(text) == seconds


@pytest.mark.parametrize("text", ["", "-1", "1d", "s", "1e3", "nan"])
def test_a_span_in_no_known_form_is_refused(text):
    with pytest.raises(ValueError, match="is not a time span"):
        parse_span(text)


def test_a_ramp_up_spreads_the_first_requests_of_each_stream_over_it():
    assert TimeBounds(ramp_up_s=2.0).ramp_offsets(6, 4) == [0.0, 0.5, 1.0, 1.5, None, None]
    assert TimeBounds().ramp_offsets(3, 4) == [None] * 3


@pytest.mark.parametrize(("flags", "complaint"), [
    (("--duration", "0"), "is not between 0 and 7 days"),
    (("--duration", "8d"), "is not a time span"),
    (("--ramp-up", "2s", "--request-rate", "4"), "a ramp-up is for closed-loop runs"),
    (("--measure-after", "x"), "'x' is not a time span"),
])
def test_bad_time_bounds_are_usage_errors(flags, complaint):
    outcome = tokenbench_in_process("run", "--mode", "mock", *flags)
    assert outcome.returncode == 2 and complaint in outcome.stderr, outcome.stderr


def _record(index: int, started_at: float, elapsed_ms: float = 100.0) -> RequestRecord:
    return make_record(index, [10.0, elapsed_ms], started_at=started_at, elapsed_ms=elapsed_ms)


def test_the_report_of_a_duration_run_counts_only_what_was_sent_and_what_ran_over():
    meta = make_meta(100, duration_s=2.0, measure_after_s=0.5)
    records = [_record(0, 1000.0), _record(1, 1000.6), _record(2, 1001.9, elapsed_ms=300.0)]
    report = build_report(meta, records, [3, 4, 5] + list(range(6, 100)), run_started_at=1000.0)
    assert report["complete"] and report["missing_runs"] == 0 and report["not_sent"] == 97
    assert report["excluded_requests"] == 1 and [r["index"] for r in report["excluded_results"]] == [0]
    assert report["successful_runs"] == 2 and report["ended_after_duration"] == 1  # #2 ended at 2.2 s
    # The report command's --measure-after overrides the run's own.
    assert build_report(meta, records, [], run_started_at=1000.0, measure_after_s=1.0)["excluded_requests"] == 2


@pytest.mark.integration
def test_a_duration_run_sends_nothing_after_its_end_ramps_up_and_drops_the_rest(redis_url, tmp_path):
    out = tmp_path / "r.json"
    outcome = tokenbench("run", "--mode", "mock", "--duration", "3s", "--ramp-up", "1s", "--measure-after", "1s",
                         "--concurrency", "4", "--prompts", "5000", "--max-tokens", "10", "--mock-ttft-ms", "100",
                         "--mock-itl-ms", "20", "--redis-url", redis_url, "--output", str(out))
    assert outcome.returncode == 0, outcome.stderr
    report = load(out)
    sent = sorted(report["excluded_results"] + report["results"], key=lambda r: r["started_at"])
    first, start = sent[0]["started_at"], report["run_started_at"]
    assert all(r["success"] for r in sent) and report["complete"] and report["missing_runs"] == 0
    assert report["not_sent"] == 5000 - len(sent) > 4000
    # Nothing goes out before the run's start or after its end (both on the Redis clock, as the
    # records' send times); what was in flight at the end ran to its finish and counts.
    assert start <= first and sent[-1]["started_at"] < start + 3.0
    assert report["ended_after_duration"] >= 1
    # The ramp: stream k's first request (job k) is due k/4 of a second after the start and goes out
    # no earlier (against its own due time: the first one may go out a few ms late on a loaded
    # machine); meanwhile the streams already started take the next jobs.
    by_index = {r["index"]: r for r in sent}
    assert [round(by_index[k]["scheduled_at"] - start, 3) for k in range(4)] == [0.0, 0.25, 0.5, 0.75]
    assert all(by_index[k]["started_at"] >= by_index[k]["scheduled_at"] - 0.005 for k in range(4))
    # --measure-after: what was sent in the first second is kept apart, out of the figures.
    assert all(r["started_at"] < first + 1.0 for r in report["excluded_results"])
    assert all(r["started_at"] >= first + 1.0 - 0.05 for r in report["results"])
    assert report["excluded_requests"] == len(report["excluded_results"]) > 0
    # The server received exactly the requests recorded; the jobs left were dropped from the queue.
    assert report["server_metrics"]["counters"]["requests_finished"] == len(sent)
    connection = redis.Redis.from_url(redis_url)
    assert connection.llen(f"rq:queue:tokenbench-run-{report['run_id']}") == 0
    assert not list(connection.scan_iter(f"rq:job:tokenbench-{report['run_id']}-*", count=10_000))
    assert "--duration 3 s:" in outcome.stdout and "request(s) ended after it" in outcome.stdout


@pytest.mark.integration
def test_a_conversation_sends_no_turn_after_the_duration(tmp_path):
    out = tmp_path / "r.json"
    outcome = tokenbench("run", "--mode", "mock", "--duration", "2s", "--turns", "50", "--prompts", "1",
                         "--turn-delay", "0.1", "--concurrency", "1", "--max-tokens", "5", "--mock-ttft-ms", "20",
                         "--mock-itl-ms", "5", "--output", str(out))
    assert outcome.returncode == 0, outcome.stderr
    report = load(out)
    turns = sorted(r["turn"] for r in report["results"])
    assert turns == list(range(1, len(turns) + 1)) and 2 <= len(turns) < 50  # in order, then stopped
    assert all(r["success"] for r in report["results"])  # the turns left are not sent, not failed
    assert report["not_sent"] == 50 - len(turns) and report["complete"]
