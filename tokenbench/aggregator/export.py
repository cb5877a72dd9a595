"""The forms a result is written in: indented JSON, and the per-request results as CSV."""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson

from tokenbench.aggregator.schema import Report

# Chunk offsets read from Redis are numpy arrays; they are written as JSON lists of numbers.
_JSON_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY


def document_json(document: Any) -> bytes:
    """A result (or any document tokenbench writes) as indented JSON, ending in a newline."""
    return orjson.dumps(document, option=_JSON_OPTIONS) + b"\n"


def results_csv(*reports: Report) -> str:
    """CSV text of every report's ``results`` (a sweep gives several), one header."""
    rows = [(report["run_id"], row) for report in reports
            for row in report["results"] + report["warmup_results"]]
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["run_id", *rows[0][1]], lineterminator="\n")
    writer.writeheader()
    for run_id, row in rows:
        writer.writerow({"run_id": run_id,
                         **{k: _cell(v) for k, v in row.items()}})
    return out.getvalue()


def _cell(value: Any) -> Any:
    """Scalars as they are; lists, objects and arrays (chunk offsets, retries) as JSON."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()
