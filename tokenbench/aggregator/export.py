"""The per-request results as CSV: one row per request, every measured field."""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson


def results_csv(report: dict[str, Any]) -> str:
    """CSV text of ``report["results"]``; lists and objects (chunk offsets, retries) as JSON."""
    rows = report["results"] + report.get("warmup_results", [])
    if not rows:
        return ""
    columns = list(rows[0])
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["run_id", *columns], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({"run_id": report["run_id"],
                         **{k: orjson.dumps(v).decode() if isinstance(v, (list, dict)) else v for k, v in row.items()}})
    return out.getvalue()
