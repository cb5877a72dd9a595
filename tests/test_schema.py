"""The result document's schema (aggregator/schema.py): every report the aggregator builds conforms to
it, a file that does not is refused with where it goes wrong, and the headline figures are named once."""

from __future__ import annotations

import json
from functools import cache

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.builders import make_meta, make_record
from tests.helpers import tokenbench_in_process
from tests.test_server_metrics import vllm_scrapes
from tokenbench.aggregator.export import document_json
from tokenbench.aggregator.headline import FIGURES, MEAN_CONCURRENCY, THROUGHPUTS
from tokenbench.aggregator.report import build_report
from tokenbench.aggregator.schema import LevelFigures, Report, result_problem, sweep_problem
from tokenbench.aggregator.server_metrics import summarize
from tokenbench.aggregator.sweep import level_summary, sweep_document
from tokenbench.runner.auto_sweep import AutoSweep
from tokenbench.shared.conformance import problem_with

LOOP_LAG = {"w:1": {"bin_ms": 0.1, "counts": {"3": 40, "12": 2}, "max_ms": 1.3}}


def written(report: Report) -> object:
    """The report as a file holds it."""
    return orjson.loads(document_json(report))


@cache
def reports_of_every_kind() -> dict[str, Report]:
    """Built once: a test edits what ``written`` gives, a copy."""
    ok = [make_record(i, [50.0 + i, 60.0, 70.0], input_tokens=12, cached_tokens=4) for i in range(3)]
    failed = make_record(3, error_type="http_error", error="HTTP 500: boom", http_status=500)
    turns = [make_record(i, session_id="s", turn=i + 1) for i in range(3)]
    return {
        "empty": build_report(make_meta(2), [], [0, 1]),
        "mixed": build_report(make_meta(5), [*ok, failed], [4], slo={"ttft": 55.0},
                              warmup_records=[make_record(9, warmup=True)], loop_lag=LOOP_LAG,
                              worker_environment={"w:1": {"python": "3.11.7", "host": "h"}}),
        "open loop": build_report(make_meta(3, request_rate=2.0, arrival="poisson", burstiness=1.0, seed=0),
                                  [make_record(i, scheduled_at=1000.0 + i, dispatch_lag_ms=1.5) for i in range(3)]),
        "conversations": build_report(make_meta(3), turns),
        "server metrics": build_report(make_meta(3), ok,
                                       server_metrics=summarize("http://h/metrics", vllm_scrapes(), failed=1)),
        "time bounds": build_report(make_meta(3, duration_s=10.0, ramp_up_s=1.0, measure_after_s=0.5), ok,
                                    run_started_at=1000.0),
    }


@pytest.mark.parametrize("kind", list(reports_of_every_kind()))
def test_every_kind_of_report_conforms_to_the_schema(kind):
    assert result_problem(written(reports_of_every_kind()[kind])) is None


def test_a_sweeps_document_conforms_and_its_levels_are_the_headline_figures():
    reports = list(reports_of_every_kind().values())
    for auto in (None, AutoSweep(3, 8)):
        document = sweep_document([1, 4], None, 0.1, reports, "stopped", config={"prompts": 5}, auto=auto)
        assert sweep_problem(written(document)) is None  # type: ignore[arg-type]
    made = set(level_summary(reports[1]))
    assert made == set(LevelFigures.__annotations__)
    assert {f.level_key for f in FIGURES} | {t.key for t in (*THROUGHPUTS, MEAN_CONCURRENCY)} <= made


@pytest.mark.parametrize("edit, problem", [
    (lambda d: d.pop("ttft_ms"), "ttft_ms is missing"),
    (lambda d: d.update(successful_runs="3"), "successful_runs is '3', not an integer"),
    (lambda d: d.update(complete=1), "complete is 1, not true or false"),
    (lambda d: d["ttft_ms"].update(p50="fast"), "ttft_ms.p50 is 'fast', not a number"),
    (lambda d: d["errors"].update(boom={"count": 1}), "errors.boom.example is missing"),
    (lambda d: d["results"][1].update(ttft_ms="x"), "results[1]: field 'ttft_ms' is not valid: 'x'"),
    (lambda d: d["results"][0].pop("index"), "results[0]: missing 1 required positional argument: 'index'"),
    (lambda d: d["results"].append(7), "results[4] is 7, not an object"),
])
def test_a_document_that_does_not_conform_says_where(edit, problem):
    document = written(reports_of_every_kind()["mixed"])
    edit(document)
    assert result_problem(document) == problem


def test_the_checker_knows_what_json_holds():
    assert problem_with(True, int) == "the document is True, not an integer"  # a bool is not a number
    assert problem_with(3, float) is None and problem_with(float("nan"), float) == "the document is nan, not a number"
    assert problem_with(None, int | None) is None and problem_with("x", int | None) == "the document is 'x', " \
                                                                                      "not an integer"
    assert problem_with({"a": [1, "b"]}, dict[str, list[int]]) == "a[1] is 'b', not an integer"


@pytest.mark.parametrize("command", ["compare", "plot"])
def test_compare_and_plot_refuse_a_file_that_does_not_conform_in_one_line(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = written(reports_of_every_kind()["mixed"])
    (tmp_path / "a.json").write_bytes(orjson.dumps(good))
    good["results"][2]["latency_ms"] = "slow"  # type: ignore[index]
    (tmp_path / "b.json").write_bytes(orjson.dumps(good))
    done = tokenbench_in_process(command, "a.json", "b.json", *(["--output", "p.html"] if command == "plot" else []))
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["tokenbench: error: Invalid value for RESULTS: b.json is not a tokenbench "
                                        "result this version can read: results[2]: field 'latency_ms' is not valid: "
                                        "'slow'"]


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                       max_size=3), max_leaves=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), command=st.sampled_from(["compare", "plot"]))
def test_any_edit_of_a_result_file_is_read_or_refused_in_one_line(data, command, tmp_path, monkeypatch):
    """A result file with any value anywhere replaced (or removed): compare and plot either work or
    say in one line what is wrong, never a traceback."""
    monkeypatch.chdir(tmp_path)
    document = written(reports_of_every_kind()[data.draw(st.sampled_from(list(reports_of_every_kind())))])
    (tmp_path / "a.json").write_bytes(orjson.dumps(document))
    node = document
    while isinstance(node, dict | list) and node and data.draw(st.booleans(), label="deeper"):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = data.draw(st.sampled_from(keys), label="key")
        if not isinstance(node[key], dict | list) or not node[key]:
            break
        node = node[key]
    if isinstance(node, dict) and node:
        key = data.draw(st.sampled_from(list(node)), label="edited")
        if data.draw(st.booleans(), label="remove"):
            del node[key]
        else:
            node[key] = data.draw(JSON_VALUES, label="value")
    (tmp_path / "b.json").write_text(json.dumps(document))  # json: an integer of any size, as a file may hold
    done = tokenbench_in_process(command, "a.json", "b.json", *(["--output", "p.html"] if command == "plot" else []))
    assert "Traceback" not in done.stderr
    if done.returncode != 0:
        assert done.returncode in (1, 2) and len(done.stderr.strip().splitlines()) == 1, done.stderr
