"""Metrics of one request, from its record (definitions: docs/metrics.md)."""

from __future__ import annotations

from tokenbench.shared.records import RequestRecord


def tpot_ms(record: RequestRecord) -> float | None:
    """Time per output token after the first: (e2e - TTFT) / (output_tokens - 1)."""
    if record.ttft_ms is None or record.latency_ms is None or record.output_tokens < 2:
        return None
    return (record.latency_ms - record.ttft_ms) / (record.output_tokens - 1)


def inter_token_latencies_ms(record: RequestRecord) -> list[float]:
    """Every gap between consecutive token-carrying chunks."""
    offsets = record.chunk_offsets_ms
    return [later - earlier for earlier, later in zip(offsets, offsets[1:])]


def tokens_per_second(record: RequestRecord) -> float | None:
    """output_tokens / end-to-end seconds."""
    if not record.latency_ms or record.latency_ms <= 0:
        return None
    return record.output_tokens / (record.latency_ms / 1000)
