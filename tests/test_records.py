"""The stored form of a request record: JSON, then its chunk offsets packed (shared/records.py)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import orjson
from hypothesis import given
from hypothesis import strategies as st

from tests.builders import make_record
from tokenbench.aggregator.export import document_json, results_csv
from tokenbench.aggregator.report import build_report
from tokenbench.shared.records import RequestRecord, RunMeta, parse_stored_records

offsets_lists = st.lists(st.floats(0, 1e7, allow_nan=False), max_size=300).map(sorted)


def sample(index: int, offsets: list[float], error: str | None = None, **kw) -> RequestRecord:
    return make_record(index, offsets, worker=f"h:{index % 3}", success=error is None, error=error,
                       output_tokens_source="chunks", error_type=None, **kw)


def fields_but_offsets(record: RequestRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k != "chunk_offsets_ms"}


@given(offsets_lists, st.text())
def test_a_record_reads_back_as_written(offsets, error):
    record = sample(7, offsets, error=error, retries=[{"status": 503, "message": "a\nb"}])
    stored = record.to_json()
    json_part = stored.split(b"\n", 1)[0]
    assert orjson.loads(json_part)["error"] == error  # a newline in a message never ends the JSON early
    back = RequestRecord.from_json(stored)
    assert fields_but_offsets(back) == fields_but_offsets(record)
    assert list(back.chunk_offsets_ms) == offsets  # exactly: float64 in, float64 out
    assert (b"\n" in stored) == bool(offsets)
    assert RequestRecord.from_json(back.to_json()).to_json() == stored  # and again, from its array form


def test_plain_json_records_of_older_workers_still_read():
    record = sample(0, [1.5, 2.25])
    old_form = orjson.dumps(vars(record))
    newer_form = orjson.dumps({**vars(record), "a_field_from_the_future": 1})
    for raw in (old_form, newer_form):
        assert RequestRecord.from_json(raw) == record
        [parsed] = parse_stored_records([raw])
        assert parsed == record


@given(st.lists(st.tuples(offsets_lists, st.booleans()), max_size=12))
def test_many_records_read_at_once_keep_their_own_offsets(shapes):
    records = [sample(i, offsets) for i, (offsets, _) in enumerate(shapes)]
    raws = [orjson.dumps(vars(r)) if old_form else r.to_json() for r, (_, old_form) in zip(records, shapes)]
    parsed = parse_stored_records(raws)
    assert [fields_but_offsets(p) for p in parsed] == [fields_but_offsets(r) for r in records]
    assert [list(p.chunk_offsets_ms) for p in parsed] == [r.chunk_offsets_ms for r in records]


def test_the_report_is_the_same_whether_records_were_measured_here_or_read_from_redis():
    rng = np.random.default_rng(3)
    records = [sample(i, np.round(np.cumsum(rng.uniform(1, 20, rng.integers(0, 40))), 3).tolist())
               for i in range(50)]
    records.append(sample(50, [], error="connection reset"))
    meta = RunMeta(run_id="r", mode="mock", model="m", base_url="http://x/v1", max_tokens=40, num_prompts=51,
                   queue="q", created_at=1000.0, prompt_ids=[f"p{i}" for i in range(51)], tokenbench_version="0")
    measured = build_report(meta, records)
    stored = build_report(meta, parse_stored_records([r.to_json() for r in reversed(records)]))
    assert isinstance(stored["results"][0]["chunk_offsets_ms"], np.ndarray)
    assert document_json(stored) == document_json(measured)
    assert results_csv(stored) == results_csv(measured)
    assert orjson.loads(document_json(stored))["results"][1]["chunk_offsets_ms"] == records[1].chunk_offsets_ms


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


@given(st.lists(st.tuples(st.integers(0, 5), st.dictionaries(st.sampled_from(
    [f.name for f in dataclasses.fields(RequestRecord)]), json_values, max_size=12)), max_size=6),
    st.lists(st.binary(max_size=30), max_size=2))
def test_the_report_is_made_whatever_redis_holds(edits, garbage):
    """Any stored record, however broken, becomes a record or an unreadable_record entry: the report and
    its JSON are always made (the aggregator reads what anyone with write access to Redis could write)."""
    import fakeredis

    from tokenbench.aggregator.collect import read_records
    from tokenbench.aggregator.schema import result_problem
    from tokenbench.shared import keys

    connection = fakeredis.FakeRedis()
    meta = RunMeta(run_id="r", mode="mock", model="m", base_url="http://h/v1", max_tokens=8, num_prompts=8,
                   queue="q", created_at=1000.0, prompt_ids=[f"p{i}" for i in range(8)], tokenbench_version="0")
    stored = {str(i): sample(i, [10.0 + i, 20.0 + i]).to_json() for i in range(6)}
    edited: dict[int, dict] = {}
    for index, changes in edits:
        edited[index] = edited.get(index, orjson.loads(stored[str(index)].split(b"\n", 1)[0])) | changes
    for index, data in edited.items():
        stored[str(index)] = json.dumps(data).encode()  # any JSON: huge integers, Infinity
    for number, raw in enumerate(garbage):
        stored[str(6 + number)] = raw
    connection.hset(keys.run_records("r"), mapping=stored)
    records = read_records(connection, meta)
    assert sorted(r.index for r in records) == sorted(int(i) for i in stored)
    report = build_report(meta, records, [i for i in range(8) if str(i) not in stored])
    assert result_problem(orjson.loads(document_json(report))) is None  # compare and plot read what it writes
    results_csv(report)
    unreadable = report["errors"].get("unreadable_record", {}).get("count", 0)
    assert report["successful_runs"] + report["failed_runs"] == len(stored) and unreadable <= len(stored)


def test_every_error_type_is_defined_in_the_failure_docs():
    from pathlib import Path

    from tokenbench.shared.records import ErrorType

    docs = (Path(__file__).resolve().parent.parent / "docs" / "failure-semantics.md").read_text()
    assert [member.value for member in ErrorType if f"`{member.value}`" not in docs] == []
    assert orjson.loads(orjson.dumps({"error_type": ErrorType.HTTP_ERROR})) == {"error_type": "http_error"}


def test_every_mock_fault_maps_to_a_documented_error_type():
    from tokenbench.mock import FAULT_ERROR_TYPES, FAULTS
    from tokenbench.shared.records import ErrorType

    assert set(FAULT_ERROR_TYPES) == set(FAULTS)
    assert set(FAULT_ERROR_TYPES.values()) <= {member.value for member in ErrorType}


def _json_bytes(value) -> bytes:
    return json.dumps(value).encode()  # any JSON: huge integers, Infinity


@given(st.dictionaries(st.binary(max_size=8), st.one_of(st.binary(max_size=40), json_values.map(_json_bytes)),
                       max_size=4),
       st.dictionaries(st.binary(max_size=8), st.one_of(st.binary(max_size=40), json_values.map(_json_bytes),
                                                        st.fixed_dictionaries({}, optional={
                                                            "bin_ms": json_values, "max_ms": json_values,
                                                            "counts": json_values, "cpu_wait": json_values,
                                                        }).map(_json_bytes)), max_size=4))
def test_the_report_is_made_whatever_the_workers_hashes_hold(workers, loop_lag):
    """What the workers note beside their records (where they ran, their loops' lag and CPU wait) is read
    from hashes anyone with write access to Redis could fill: the report, its table and its JSON are
    always made, and what is not a worker's note counts for nothing."""
    import fakeredis

    from tokenbench.aggregator.schema import result_problem
    from tokenbench.aggregator.table import format_summary
    from tokenbench.shared import keys
    from tokenbench.shared.record_store import read_loop_lag, read_workers

    connection = fakeredis.FakeRedis()
    if workers:
        connection.hset(keys.run_workers("r"), mapping=workers)
    if loop_lag:
        connection.hset(keys.run_loop_lag("r"), mapping=loop_lag)
    meta = RunMeta(run_id="r", mode="mock", model="m", base_url="http://h/v1", max_tokens=8, num_prompts=2,
                   queue="q", created_at=1000.0, prompt_ids=["p0", "p1"], tokenbench_version="0")
    report = build_report(meta, [sample(0, [10.0, 20.0]), sample(1, [11.0, 21.0])],
                          worker_environment=read_workers(connection, "r"), loop_lag=read_loop_lag(connection, "r"))
    assert result_problem(orjson.loads(document_json(report))) is None
    format_summary(report)
