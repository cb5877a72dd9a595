"""Metrics of one request, from its record (definitions: docs/metrics.md)."""

from __future__ import annotations

from itertools import chain
from typing import TYPE_CHECKING

from tokenbench.shared.records import RequestRecord

if TYPE_CHECKING:
    import numpy as np


def tpot_ms(record: RequestRecord) -> float | None:
    """Time per output token after the first: (e2e - TTFT) / (output_tokens - 1)."""
    if record.ttft_ms is None or record.latency_ms is None or record.output_tokens < 2:
        return None
    return (record.latency_ms - record.ttft_ms) / (record.output_tokens - 1)


def inter_chunk_gaps_ms(record: RequestRecord) -> list[float]:
    """Every gap between consecutive token-carrying chunks, as received."""
    offsets = record.chunk_offsets_ms
    return [later - earlier for earlier, later in zip(offsets, offsets[1:])]


def inter_token_latencies_ms(record: RequestRecord) -> list[float]:
    """ITL per token: a chunk of k tokens arriving g ms after the previous chunk gives k samples of
    g/k when the tokens per chunk are known (``itl_source``); otherwise the gaps between chunks."""
    gaps = inter_chunk_gaps_ms(record)
    if record.chunk_tokens is None:
        return gaps
    return [gap / k for gap, k in zip(gaps, record.chunk_tokens[1:]) for _ in range(k)]


def itl_source(record: RequestRecord) -> str:
    """Where the per-token split of ITL came from: "usage", "logprobs", or "chunks" (one token each)."""
    return record.chunk_tokens_source or "chunks"


def tokens_per_second(record: RequestRecord) -> float | None:
    """output_tokens / end-to-end seconds."""
    if not record.latency_ms or record.latency_ms <= 0:
        return None
    return record.output_tokens / (record.latency_ms / 1000)


def concatenated_chunk_offsets(records: list[RequestRecord]) -> tuple[np.ndarray, np.ndarray]:
    """(every record's chunk offsets one after another, how many each record has), as arrays."""
    import numpy as np

    lengths = np.fromiter((len(r.chunk_offsets_ms) for r in records), dtype=np.int64, count=len(records))
    if all(isinstance(r.chunk_offsets_ms, np.ndarray) for r in records):  # read from Redis: join the arrays
        offsets = np.concatenate([r.chunk_offsets_ms for r in records]) if records else np.empty(0)
    else:
        offsets = np.fromiter(chain.from_iterable(r.chunk_offsets_ms for r in records), dtype=np.float64,
                              count=int(lengths.sum()))
    return offsets, lengths


def pooled_inter_chunk_gaps_ms(records: list[RequestRecord]) -> np.ndarray:
    """``inter_chunk_gaps_ms`` of every record, concatenated, computed in one pass by numpy
    (a large run has tens of millions of them)."""
    import numpy as np

    offsets, lengths = concatenated_chunk_offsets(records)
    gaps = np.diff(offsets)
    # The differences across two records' boundary are no gap: each sits just before a record's first chunk.
    boundaries = np.cumsum(lengths)[:-1] - 1
    keep = np.ones(gaps.size, dtype=bool)
    keep[boundaries[(boundaries >= 0) & (boundaries < gaps.size)]] = False
    return gaps[keep]


def pooled_inter_token_latencies_ms(records: list[RequestRecord]) -> np.ndarray:
    """``inter_token_latencies_ms`` of every record, concatenated (in another order: no summary cares)."""
    import numpy as np

    plain = [r for r in records if r.chunk_tokens is None]
    split = [np.asarray(inter_token_latencies_ms(r), dtype=np.float64) for r in records if r.chunk_tokens is not None]
    return np.concatenate([pooled_inter_chunk_gaps_ms(plain), *split])
