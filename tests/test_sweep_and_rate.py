"""Concurrency sweeps and open-loop (request-rate) runs: the schedule maths, and real runs end to end."""

from __future__ import annotations

import asyncio
import csv
import io
import statistics

import pytest

from tests.builders import make_distribution, make_report
from tests.helpers import load, tokenbench, tokenbench_in_process
from tokenbench.aggregator.schema import Report
from tokenbench.aggregator.sweep import format_sweep, sweep_document
from tokenbench.producer.arrivals import ArrivalSchedule


def test_constant_arrivals_are_evenly_spaced_from_zero():
    assert ArrivalSchedule(4.0, "constant").send_offsets(4) == [0.0, 0.25, 0.5, 0.75]


@pytest.mark.parametrize("burstiness", [0.25, 1.0, 4.0])
def test_poisson_arrivals_keep_the_mean_rate_and_burstiness_sets_the_spread(burstiness):
    offsets = ArrivalSchedule(10.0, "poisson", burstiness, seed=7).send_offsets(20_001)
    gaps = [b - a for a, b in zip(offsets, offsets[1:])]
    assert offsets[0] == 0.0
    assert statistics.fmean(gaps) == pytest.approx(0.1, rel=0.04)  # 10 requests/s on average
    # Gamma gaps of shape k have a coefficient of variation of 1/sqrt(k) (vLLM's burstiness).
    cv = statistics.pstdev(gaps) / statistics.fmean(gaps)
    assert cv == pytest.approx(burstiness ** -0.5, rel=0.06)


def test_the_seed_makes_a_schedule_repeatable():
    first = ArrivalSchedule(5.0, seed=1).send_offsets(50)
    assert first == ArrivalSchedule(5.0, seed=1).send_offsets(50)
    assert first != ArrivalSchedule(5.0, seed=2).send_offsets(50)


def level_report(concurrency: int, ok: int, total: int = 10) -> Report:
    dist = make_distribution(p50=10.0, p99=20.0)
    return make_report(total, ok, concurrency=concurrency, run_id=f"r{concurrency}",
                       request_throughput_per_s=1.5 * concurrency, output_throughput_tokens_per_s=1234.5 * concurrency,
                       mean_concurrency=concurrency * 0.9, ttft_ms=dist, itl_ms=dist, tpot_ms=dist,
                       e2e_latency_ms=make_distribution(p50=12345.6, p99=20000.0))


def test_sweep_table_fits_80_columns_and_says_why_it_stopped():
    document = sweep_document([1, 64, 512], None, 0.1, [level_report(1, 10), level_report(64, 5)],
                              "error rate 50.0% at concurrency 64 exceeds --max-error-rate 10.0%")
    assert document["sweep"]["completed_levels"] == [1, 64]
    assert [level["error_rate"] for level in document["levels"]] == [0.0, 0.5]
    table = format_sweep(document)
    assert max(len(line) for line in table.splitlines()) <= 80
    assert "stopped early: error rate 50.0% at concurrency 64" in table and "50.0%" in table.splitlines()[3]


def test_the_knee_is_where_ttft_p99_passes_twice_the_first_levels_and_a_rate_sweep_says_so():
    reports = [level_report(8, 10) | {"request_rate": rate, "ttft_ms": make_distribution(p50=10.0, p99=p99)}
               for rate, p99 in ((1.0, 20.0), (2.0, 30.0), (4.0, 41.0), (8.0, 90.0))]
    document = sweep_document([8], [1.0, 2.0, 4.0, 8.0], 0.1, reports, None)
    assert document["sweep"]["completed_levels"] == [1.0, 2.0, 4.0, 8.0]
    assert document["sweep"]["knee"] == {"level": 2, "concurrency": 8, "request_rate": 4.0, "ttft_p99_ms": 41.0,
                                         "times_first_level": 2.05,
                                         "rule": "the first level whose TTFT p99 is over 2x the first level's"}
    table = format_sweep(document)
    assert table.splitlines()[0] == "sweep: throughput and latency per request rate, <= 8 in flight (ms)"
    assert table.splitlines()[1].split()[0] == "rate/s" and table.splitlines()[4].split()[0] == "4"
    assert "  knee: TTFT p99 turns at 4 req/s: 41.0 ms, 2.05x the first level's" in table
    assert max(len(line) for line in table.splitlines()) <= 80
    flat = sweep_document([8], [1.0, 2.0], 0.1, reports[:2], None)
    assert flat["sweep"]["knee"] is None and "knee" not in format_sweep(flat)


@pytest.mark.parametrize("args, complaint", [
    (["sweep", "--concurrency", "1,2", "--request-rate", "1,2"], "sweep concurrency levels or request rates"),
    (["run", "--request-rate", "1,2"], "several (R,R,...) are for `sweep`"),
    (["sweep", "--concurrency", "4", "--request-rate", "1,x"], "'x' is not a number"),
    (["sweep", "--concurrency", "4", "--request-rate", "2,2"], "repeats a rate"),
])
def test_rate_lists_belong_to_sweep_and_are_checked(args, complaint):
    done = tokenbench(*args, "--mode", "mock")
    assert done.returncode == 2 and complaint in done.stderr, done.stderr


@pytest.mark.integration
def test_a_rate_sweep_runs_each_rate_at_one_concurrency_cap(redis_url, tmp_path):
    outcome = tokenbench("sweep", "--mode", "mock", "--concurrency", "4", "--request-rate", "10,40",
                         "--arrival", "constant", "--prompts", "12", "--max-tokens", "4", "--mock-ttft-ms", "5",
                         "--mock-itl-ms", "2", "--redis-url", redis_url, "--output", str(tmp_path / "s.json"),
                         "--html", str(tmp_path / "s.html"))
    assert outcome.returncode == 0, outcome.stderr
    document = load(tmp_path / "s.json")
    assert document["sweep"]["request_rates"] == [10.0, 40.0] and document["sweep"]["completed_levels"] == [10, 40]
    assert [(run["request_rate"], run["arrival"], run["concurrency"]) for run in document["runs"]] == [
        (10.0, "constant", 4), (40.0, "constant", 4)]
    for run, rate in zip(document["runs"], (10, 40)):
        sent = sorted(r["scheduled_at"] for r in run["results"])
        assert [round(b - a, 6) for a, b in zip(sent, sent[1:])] == [round(1 / rate, 6)] * 11
    assert "TTFT against throughput, by request rate" in (tmp_path / "s.html").read_text()
    assert "10 req/s" in (tmp_path / "s.html").read_text()


@pytest.mark.parametrize("flags, complaint", [
    (["--burstiness", "2"], "need --request-rate"),
    (["--request-rate", "5", "--arrival", "constant", "--burstiness", "2"], "poisson only"),
    (["--request-rate", "0"], "--request-rate"),
])
def test_bad_schedule_flags_are_one_line_errors(flags, complaint):
    outcome = tokenbench("run", "--mode", "mock", *flags)
    assert outcome.returncode == 2 and complaint in outcome.stderr
    assert len(outcome.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("levels, complaint", [("1,x", "comma-separated"), ("0,2", "at least 1"), ("2,2", "repeats")])
def test_bad_sweep_levels_are_one_line_errors(levels, complaint):
    outcome = tokenbench("sweep", "--mode", "mock", "--concurrency", levels)
    assert outcome.returncode == 2 and complaint in outcome.stderr
    assert len(outcome.stderr.strip().splitlines()) == 1


@pytest.mark.integration
def test_an_open_loop_run_sends_on_schedule(redis_url, tmp_path):
    outcome = tokenbench("run", "--mode", "mock", "--prompts", "30", "--concurrency", "4", "--max-tokens", "8",
                         "--mock-ttft-ms", "20", "--mock-itl-ms", "5", "--request-rate", "25",
                         "--arrival", "constant", "--redis-url", redis_url, "--output", str(tmp_path / "r.json"))
    assert outcome.returncode == 0, outcome.stderr
    report = load(tmp_path / "r.json")
    assert (report["request_rate"], report["arrival"], report["schedule_kept"]) == (25, "constant", True)
    scheduled = sorted(r["scheduled_at"] for r in report["results"])
    assert [round(b - a, 6) for a, b in zip(scheduled, scheduled[1:])] == [0.04] * 29
    # Each request went out when it was due, not as soon as a worker was free (~85 ms requests,
    # 4 workers: closed loop would send ~47 per second).
    sent = sorted(r["started_at"] for r in report["results"])
    assert statistics.median(b - a for a, b in zip(sent, sent[1:])) == pytest.approx(0.04, abs=0.01)
    assert 0 <= report["dispatch_lag_ms"]["p50"] < 20
    # The schedule's own warning, not the CPU-busy one a loaded machine rightly adds.
    assert "schedule     25 req/s, constant arrivals" in outcome.stdout
    assert "after their scheduled time" not in outcome.stdout


@pytest.mark.integration
def test_too_few_workers_for_the_rate_are_reported(redis_url, tmp_path):
    # One worker, ~90 ms requests, 40 due per second: the queue backs up and every send is later.
    outcome = tokenbench("run", "--mode", "mock", "--prompts", "12", "--concurrency", "1", "--max-tokens", "8",
                         "--mock-ttft-ms", "50", "--mock-itl-ms", "5", "--request-rate", "40", "--seed", "3",
                         "--redis-url", redis_url, "--output", str(tmp_path / "r.json"))
    assert outcome.returncode == 0, outcome.stderr
    report = load(tmp_path / "r.json")
    assert report["schedule_kept"] is False and report["dispatch_lag_ms"]["max"] > 500
    lags = [r["dispatch_lag_ms"] for r in sorted(report["results"], key=lambda r: r["scheduled_at"])]
    assert lags[-1] > lags[0] + 400  # the backlog grows along the run
    assert "too few workers to keep the schedule" in outcome.stdout


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_a_sweep_runs_each_level_with_its_workers_and_writes_every_form(redis_url, tmp_path):
    outcome = tokenbench("sweep", "--mode", "mock", "--concurrency", "1,3", "--prompts", "9", "--max-tokens", "8",
                         "--mock-ttft-ms", "20", "--mock-itl-ms", "5", "--redis-url", redis_url,
                         "--output", str(tmp_path / "s.json"), "--csv", str(tmp_path / "s.csv"),
                         "--html", str(tmp_path / "s.html"), timeout=200)
    assert outcome.returncode == 0, outcome.stderr
    document = load(tmp_path / "s.json")
    assert document["sweep"]["completed_levels"] == [1, 3] and document["sweep"]["stopped_early"] is None
    for run, streams in zip(document["runs"], (1, 3)):
        assert run["successful_runs"] == 9 and run["max_concurrency"] == streams
        assert len({(r["worker"], r["stream"]) for r in run["results"]}) == streams
    assert document["levels"][1]["request_throughput_per_s"] > 2 * document["levels"][0]["request_throughput_per_s"]
    rows = list(csv.DictReader(io.StringIO((tmp_path / "s.csv").read_text())))
    assert len(rows) == 18 and {row["run_id"] for row in rows} == {run["run_id"] for run in document["runs"]}
    page = (tmp_path / "s.html").read_text()
    assert "TTFT against throughput, by concurrency" in page
    assert page.count("<svg ") == 3 + 4 + 2 + 2  # curves, distributions, each level's server chart and timeline
    assert max(len(line) for line in outcome.stdout.splitlines()) <= 80

    plotted = tokenbench("plot", str(tmp_path / "s.json"), "-o", str(tmp_path / "again.html"))
    assert plotted.returncode == 0 and (tmp_path / "again.html").read_text() == page


@pytest.mark.integration
def test_a_sweep_stops_when_errors_pass_the_limit(redis_url, tmp_path):
    outcome = tokenbench("sweep", "--mode", "mock", "--concurrency", "1,2,4", "--prompts", "4", "--max-tokens", "8",
                         "--mock-ttft-ms", "5", "--mock-itl-ms", "2", "--mock-fault", "error",
                         "--mock-fault-rate", "1", "--max-error-rate", "0.5", "--redis-url", redis_url,
                         "--output", str(tmp_path / "s.json"))
    assert outcome.returncode == 1
    assert "sweep stopped early: error rate 100.0% at concurrency 1" in outcome.stderr
    assert load(tmp_path / "s.json")["sweep"]["completed_levels"] == [1]


def test_the_schedule_starts_after_every_job_is_written_and_workers_wait_for_it():
    import threading

    import fakeredis
    from rq import Queue
    from rq.serializers import JSONSerializer

    from tokenbench.producer.enqueue import SCHEDULE_LEAD_S, enqueue_run
    from tokenbench.producer.prompts import select_prompts
    from tokenbench.shared import keys
    from tokenbench.shared.endpoint import resolve_endpoint
    from tokenbench.worker.job import wait_for_schedule_start

    server = fakeredis.FakeServer()
    connection = fakeredis.FakeRedis(server=server)
    async_connection = fakeredis.FakeAsyncRedis(server=server)

    def schedule_start(connection, run_id, timeout_s):
        return asyncio.run(wait_for_schedule_start(async_connection, run_id, timeout_s))

    endpoint = resolve_endpoint("openai", "http://127.0.0.1:9/v1", "m", 8)
    meta = enqueue_run(connection, endpoint, select_prompts(5), run_id="sched", queue_name="q",
                       schedule=ArrivalSchedule(10.0, "constant"))
    jobs = Queue("q", connection=connection, serializer=JSONSerializer).get_jobs()
    assert [job.args[0]["send_after_s"] for job in jobs] == [0.0, 0.1, 0.2, 0.3, 0.4]
    seconds, microseconds = connection.time()
    start = schedule_start(connection, meta.run_id, timeout_s=1)
    assert 0 < start - (seconds + microseconds / 1e6) <= SCHEDULE_LEAD_S + 0.01

    threading.Timer(0.2, connection.set, (keys.run_schedule_start("late"), 123.5)).start()
    assert schedule_start(connection, "late", timeout_s=5) == 123.5  # written after the job was taken
    assert schedule_start(connection, "never", timeout_s=0.05) is None


def test_an_infinite_request_rate_is_vllms_closed_loop():
    import math

    from tokenbench.cli_options import schedule_from_flags

    assert schedule_from_flags(math.inf, None, None, 0) is None
    assert schedule_from_flags(2.0, None, None, 0) == ArrivalSchedule(2.0, "poisson", 1.0, 0)


def test_an_auto_sweep_spreads_its_rates_strictly_between_the_measured_ones():
    from tokenbench.runner.auto_sweep import AutoSweep, by_load

    auto = AutoSweep(rates=3, concurrency=8)
    assert auto.rates_between(10.0, 50.0) == [20.0, 30.0, 40.0]
    assert auto.rates_between(1.0, 2.0) == [1.25, 1.5, 1.75]
    assert auto.rates_between(5.0, 5.0) == [] and auto.rates_between(6.0, 5.0) == []  # nothing to sweep
    assert by_load(["sync", "saturation", "r1", "r2"]) == ["sync", "r1", "r2", "saturation"]


@pytest.mark.parametrize("flags, complaint", [
    (["--auto", "3", "--concurrency", "1,4"], "one --concurrency of 2 or more"),
    (["--auto", "3", "--concurrency", "1"], "one --concurrency of 2 or more"),
    (["--auto", "3", "--concurrency", "4", "--request-rate", "5"], "finds its own request rates"),
    (["--auto", "0", "--concurrency", "4"], "--auto"),
])
def test_bad_auto_sweeps_are_usage_errors(flags, complaint):
    outcome = tokenbench_in_process("sweep", "--mode", "mock", *flags)
    assert outcome.returncode == 2 and complaint in outcome.stderr, outcome.stderr


@pytest.mark.integration
def test_an_auto_sweep_finds_the_range_then_sweeps_rates_across_it(redis_url, tmp_path):
    outcome = tokenbench("sweep", "--mode", "mock", "--auto", "2", "--concurrency", "4", "--arrival", "constant",
                         "--prompts", "12", "--max-tokens", "5", "--mock-ttft-ms", "20", "--mock-itl-ms", "5",
                         "--redis-url", redis_url, "--output", str(tmp_path / "s.json"))
    assert outcome.returncode == 0, outcome.stderr
    document = load(tmp_path / "s.json")
    runs, auto = document["runs"], document["sweep"]["auto"]
    # In order of load: one stream, the two rates, the top concurrency.
    assert [(run["concurrency"], run["request_rate"]) for run in runs][::3] == [(1, None), (4, None)]
    synchronous, saturation = runs[0]["request_throughput_per_s"], runs[3]["request_throughput_per_s"]
    assert (auto["synchronous_rps"], auto["saturation_rps"]) == (synchronous, saturation)
    from tokenbench.runner.auto_sweep import AutoSweep

    rates = AutoSweep(2, 4).rates_between(synchronous, saturation)
    assert [run["request_rate"] for run in runs[1:3]] == rates and synchronous < rates[0] < rates[1] < saturation
    assert all(run["arrival"] == "constant" and run["concurrency"] == 4 for run in runs[1:3])
    assert document["sweep"]["request_rates"] == [None, *rates, None]
    assert "    c=1 " in outcome.stdout and "    c=4 " in outcome.stdout
