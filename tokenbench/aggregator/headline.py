"""The headline metrics, named once: the summary table, the HTML page, a sweep's levels and table,
and `compare` all show these, under these names (vLLM `bench serve`'s: TTFT, TPOT, ITL, E2EL).
docs/metrics.md defines them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from statistics import median
from typing import Literal

from tokenbench.aggregator.request_metrics import inter_token_latencies_ms
from tokenbench.aggregator.schema import ResultEntry
from tokenbench.shared.records import RequestRecord, from_known_fields

LatencyKey = Literal["ttft_ms", "tpot_ms", "itl_ms", "e2e_latency_ms"]
Percentile = Literal["p50", "p90", "p95", "p99"]
ThroughputKey = Literal["request_throughput_per_s", "output_throughput_tokens_per_s", "mean_concurrency"]


def _itl_median(entry: ResultEntry) -> float | None:
    gaps = inter_token_latencies_ms(from_known_fields(RequestRecord, {"run_id": "", **entry}))
    return median(gaps) if gaps else None


@dataclass(frozen=True)
class Latency:
    """A per-request latency: its distribution in the report, and its value for one request."""

    name: str
    key: LatencyKey  # its Distribution in the report
    decimals: int  # shown with this many decimals
    per_request: Callable[[ResultEntry], float | None]  # from a results[] entry (compare resamples them)


TTFT = Latency("TTFT", "ttft_ms", 1, lambda entry: entry["ttft_ms"])
TPOT = Latency("TPOT", "tpot_ms", 2, lambda entry: entry["tpot_ms"])
ITL = Latency("ITL", "itl_ms", 2, _itl_median)  # a request's value: the median of its gaps
E2EL = Latency("E2EL", "e2e_latency_ms", 0, lambda entry: entry["latency_ms"])
LATENCIES = (TTFT, TPOT, ITL, E2EL)


@dataclass(frozen=True)
class Figure:
    """A percentile of a latency: what a row of a sweep or a comparison shows."""

    latency: Latency
    percentile: Percentile
    in_sweep_table: bool = True  # the sweep's 80-column table has room for some only

    @property
    def label(self) -> str:
        return f"{self.latency.name} {self.percentile}"

    @property
    def level_key(self) -> str:
        """Its key in a sweep level's summary, e.g. ``ttft_p50_ms``."""
        return f"{self.latency.key.removesuffix('_ms')}_{self.percentile}_ms"


FIGURES = (
    Figure(TTFT, "p50"),
    Figure(TTFT, "p99"),
    Figure(ITL, "p50"),
    Figure(ITL, "p99", in_sweep_table=False),
    Figure(TPOT, "p50", in_sweep_table=False),
    Figure(E2EL, "p50"),
    Figure(E2EL, "p99", in_sweep_table=False),
)


@dataclass(frozen=True)
class Throughput:
    """A figure of the whole run (one value per run)."""

    name: str
    key: ThroughputKey
    decimals: int


THROUGHPUTS = (
    Throughput("req/s", "request_throughput_per_s", 2),
    Throughput("output tok/s", "output_throughput_tokens_per_s", 1),
)
MEAN_CONCURRENCY = Throughput("in flight", "mean_concurrency", 1)  # time-weighted requests in flight
