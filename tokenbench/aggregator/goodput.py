"""Goodput as vLLM's `bench serve` defines it: completed requests per second that meet every
service-level objective given (TTFT, TPOT, E2EL, in milliseconds).
"""

from __future__ import annotations

from tokenbench.aggregator.request_metrics import tpot_ms
from tokenbench.shared.records import RequestRecord

SLO_METRICS = ("ttft", "tpot", "e2el")


def parse_slo(text: str) -> dict[str, float]:
    """``"ttft=500,tpot=50"`` -> ``{"ttft": 500.0, "tpot": 50.0}``; ValueError naming what is wrong."""
    slo: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep:
            raise ValueError(f"{part.strip()!r} is not METRIC=MS (e.g. ttft=500)")
        if name not in SLO_METRICS:
            raise ValueError(f"unknown metric {name!r}: use {', '.join(SLO_METRICS)}")
        try:
            limit = float(value)
        except ValueError:
            raise ValueError(f"{name}: {value.strip()!r} is not a number of milliseconds") from None
        if not limit > 0:
            raise ValueError(f"{name}: the limit must be above 0 ms")
        slo[name] = limit
    return slo


def meets_slo(record: RequestRecord, slo: dict[str, float]) -> bool:
    """A successful request meeting every objective. As in vLLM, a one-token answer has TPOT 0."""
    if not record.success:
        return False
    values = {"ttft": record.ttft_ms, "tpot": tpot_ms(record) or 0.0, "e2el": record.latency_ms}
    return all(value is not None and value <= limit for value, limit in ((values[name], limit)
                                                                          for name, limit in slo.items()))
