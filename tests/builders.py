"""The one way tests make records, run metadata and reports: a plausible default for every field, the
fields a test cares about given by name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from tokenbench.aggregator.report import build_report
from tokenbench.aggregator.schema import Distribution, Report
from tokenbench.shared.records import TOKENS_FROM_USAGE, RequestRecord, RunMeta


def make_record(index: int = 0, offsets: Sequence[float] | None = None, **fields: Any) -> RequestRecord:
    """Request ``index`` of run "r": a success whose token chunks came at ``offsets`` (ms after the
    send; default 10 and 20), with TTFT, latency, end and token count following from them; a failure
    when ``success=False`` or an ``error_type`` is given (then no chunks unless ``offsets`` are)."""
    failed = fields.get("success") is False or fields.get("error_type") is not None
    chunks = list(offsets) if offsets is not None else [] if failed else [10.0, 20.0]
    values: dict[str, Any] = {
        "run_id": "r", "index": index, "prompt_id": f"p{index}", "category": "c", "worker": "h:1", "host": "h",
        "started_at": 1000.0 + index, "success": not failed, "chunk_offsets_ms": chunks,
        "ttft_ms": chunks[0] if chunks else None, "latency_ms": chunks[-1] if chunks else None,
        "elapsed_ms": chunks[-1] + 1 if chunks else 1.0, "output_tokens": len(chunks),
        "output_tokens_source": TOKENS_FROM_USAGE,
    }
    if failed and fields.get("error_type") is None:
        values["error_type"] = "http_error"
    values.update(fields)
    return RequestRecord(**values)


def make_meta(num_prompts: int, **fields: Any) -> RunMeta:
    """Run "r" of ``num_prompts`` requests against a mock, created at epoch 1000."""
    values: dict[str, Any] = {
        "run_id": "r", "mode": "mock", "model": "m", "base_url": "http://x/v1", "max_tokens": 16,
        "num_prompts": num_prompts, "queue": "q", "created_at": 1000.0,
        "prompt_ids": [f"p{i}" for i in range(num_prompts)], "tokenbench_version": "0",
    }
    values.update(fields)
    return RunMeta(**values)


def make_distribution(**parts: float | None) -> Distribution:
    """A distribution whose figures are ``parts`` (e.g. p50=10.0), the others None."""
    empty: dict[str, float | None] = dict.fromkeys(Distribution.__annotations__)
    return cast(Distribution, empty | parts)


def make_report(num_prompts: int, successful: int, **fields: Any) -> Report:
    """The report of run "r" whose first ``successful`` requests succeeded and the rest have no record,
    with ``fields`` put in place of what build_report made."""
    report = build_report(make_meta(num_prompts), [make_record(i) for i in range(successful)],
                          missing=list(range(successful, num_prompts)))
    return cast(Report, {**report, **fields})
