"""The per-request results as CSV: one row per request, every measured field."""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson


def results_csv(*reports: dict[str, Any]) -> str:
    """CSV text of every report's ``results`` (a sweep gives several), one header; lists and objects
    (chunk offsets, retries) as JSON."""
    rows = [(report["run_id"], row) for report in reports
            for row in report["results"] + report.get("warmup_results", [])]
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["run_id", *rows[0][1]], lineterminator="\n")
    writer.writeheader()
    for run_id, row in rows:
        writer.writerow({"run_id": run_id,
                         **{k: orjson.dumps(v).decode() if isinstance(v, (list, dict)) else v for k, v in row.items()}})
    return out.getvalue()
