"""The server's own view of a run, from its Prometheus `/metrics` (vLLM, SGLang, tokenbench's mock).

A scrape is parsed with prometheus_client's text parser into the few figures that say where a
request's time went: gauges (requests running and waiting, KV-cache use) as time series, counters
(tokens generated, prefix-cache queries and hits) and histograms (TTFT, queue, prefill and decode
time, inter-token latency, end-to-end latency) as deltas between the first scrape and the last.
Metric names differ between servers and versions: ``GAUGES``, ``COUNTERS`` and ``HISTOGRAMS`` map
each figure to every name it goes by; other ``vllm:``/``sglang:`` gauges and counters are kept raw.

A histogram's percentiles are estimates: interpolated inside its buckets, as Prometheus's
``histogram_quantile`` does; its count, sum and mean are exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from tokenbench.aggregator.schema import ServerDecomposition, ServerDistribution, ServerMetrics

SERVER_PREFIXES = ("vllm:", "sglang:")

# figure -> the names servers give it, newest first (prometheus_client drops a counter's _total).
GAUGES: dict[str, tuple[str, ...]] = {
    "requests_running": ("vllm:num_requests_running", "sglang:num_running_reqs"),
    "requests_waiting": ("vllm:num_requests_waiting", "sglang:num_queue_reqs"),
    # A fraction from 0 to 1 in every version, whatever "perc" says.
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage"),
    "cache_hit_rate": ("sglang:cache_hit_rate",),
}
COUNTERS: dict[str, tuple[str, ...]] = {
    "generation_tokens": ("vllm:generation_tokens", "sglang:generation_tokens"),
    "prompt_tokens": ("vllm:prompt_tokens", "sglang:prompt_tokens"),
    "prompt_tokens_cached": ("vllm:prompt_tokens_cached", "sglang:cached_tokens"),
    "prefix_cache_queries": ("vllm:prefix_cache_queries", "vllm:gpu_prefix_cache_queries"),
    "prefix_cache_hits": ("vllm:prefix_cache_hits", "vllm:gpu_prefix_cache_hits"),
    "requests_finished": ("vllm:request_success", "sglang:num_requests"),
    "preemptions": ("vllm:num_preemptions",),
}
HISTOGRAMS: dict[str, tuple[str, ...]] = {
    "ttft": ("vllm:time_to_first_token_seconds", "sglang:time_to_first_token_seconds"),
    # Per-token gaps: vLLM's older name for them was time_per_output_token_seconds.
    "itl": ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds",
            "sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
    "tpot": ("vllm:request_time_per_output_token_seconds",),  # one mean per request
    "e2e_latency": ("vllm:e2e_request_latency_seconds", "sglang:e2e_request_latency_seconds"),
    "queue_time": ("vllm:request_queue_time_seconds", "sglang:queue_time_seconds"),
    "prefill_time": ("vllm:request_prefill_time_seconds",),
    "decode_time": ("vllm:request_decode_time_seconds",),
    "inference_time": ("vllm:request_inference_time_seconds",),
}


@dataclass(frozen=True)
class Histogram:
    """A histogram summed over its label sets: cumulative counts at each upper bound, count, sum."""

    buckets: tuple[tuple[float, float], ...]  # (le, cumulative count), ascending, ending at +Inf
    count: float
    sum: float

    def minus(self, earlier: Histogram | None) -> Histogram:
        if earlier is None or [le for le, _ in earlier.buckets] != [le for le, _ in self.buckets]:
            return self
        return Histogram(tuple((le, n - m) for (le, n), (_, m) in zip(self.buckets, earlier.buckets)),
                         self.count - earlier.count, self.sum - earlier.sum)


@dataclass
class Scrape:
    """One `/metrics` answer: when it was asked for and answered (epoch seconds), and what it said."""

    sent_at: float
    answered_at: float
    gauges: dict[str, float] = field(default_factory=dict)  # figure -> value
    counters: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, Histogram] = field(default_factory=dict)
    raw: dict[str, float] = field(default_factory=dict)  # other server gauges and counters, by their own name
    server: str | None = None  # "vllm" or "sglang" (tokenbench's mock: "vllm"): the prefix its families carry


def parse_scrape(text: str, sent_at: float, answered_at: float) -> Scrape:
    """The figures of one `/metrics` text; a ValueError if it is not Prometheus text at all."""
    from prometheus_client.parser import text_string_to_metric_families  # only where metrics are scraped

    values: dict[str, float] = {}  # gauge and counter families of the server, summed over labels
    histograms: dict[str, Histogram] = {}
    server = None
    for family in text_string_to_metric_families(text):
        prefix = next((p for p in SERVER_PREFIXES if family.name.startswith(p)), None)
        if prefix is None or family.name.endswith("_created"):
            continue
        server = server or prefix.rstrip(":")
        if family.type == "histogram":
            histogram = _histogram(family.samples, family.name)
            if histogram is not None:
                histograms[family.name] = histogram
        elif family.type in ("gauge", "counter"):
            values[family.name] = sum(s.value for s in family.samples
                                      if s.name in (family.name, family.name + "_total") and math.isfinite(s.value))
    mapped = {name for table in (GAUGES, COUNTERS) for names in table.values() for name in names}
    return Scrape(sent_at=sent_at, answered_at=answered_at, server=server,
                  gauges=_pick(GAUGES, values), counters=_pick(COUNTERS, values),
                  histograms=_pick(HISTOGRAMS, histograms),
                  raw={name: value for name, value in values.items() if name not in mapped})


def _pick(table: dict[str, tuple[str, ...]], found: dict[str, Any]) -> dict[str, Any]:
    """Each figure from the first of its names that the server exports."""
    picked = {}
    for figure, names in table.items():
        name = next((n for n in names if n in found), None)
        if name is not None:
            picked[figure] = found[name]
    return picked


def _histogram(samples: list[Any], name: str) -> Histogram | None:
    buckets: dict[float, float] = {}
    count = total = 0.0
    for sample in samples:
        if sample.name == name + "_bucket":
            le = float(sample.labels.get("le", "nan"))
            if not math.isnan(le):
                buckets[le] = buckets.get(le, 0.0) + sample.value
        elif sample.name == name + "_count":
            count += sample.value
        elif sample.name == name + "_sum":
            total += sample.value
    if not buckets:
        return None
    return Histogram(tuple(sorted(buckets.items())), count, total)


def quantile(histogram: Histogram, q: float) -> float | None:
    """The q-quantile by linear interpolation inside the bucket that holds it (histogram_quantile)."""
    if histogram.count <= 0:
        return None
    rank = q * histogram.count
    lower_le, lower_count = 0.0, 0.0
    for le, cumulative in histogram.buckets:
        if cumulative >= rank:
            if math.isinf(le):
                return lower_le  # the open top bucket: its lower bound is all that is known
            share = (rank - lower_count) / (cumulative - lower_count) if cumulative > lower_count else 1.0
            return lower_le + (le - lower_le) * share
        lower_le, lower_count = le, cumulative
    return lower_le


def distribution_ms(histogram: Histogram) -> ServerDistribution:
    """A seconds histogram's delta as milliseconds: exact count, sum and mean; estimated percentiles."""
    if histogram.count <= 0:
        return {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None}

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 3)
    return {"count": int(round(histogram.count)), "mean": ms(histogram.sum / histogram.count),
            "p50": ms(quantile(histogram, 0.5)), "p90": ms(quantile(histogram, 0.9)),
            "p99": ms(quantile(histogram, 0.99)), "percentiles": "estimated from the histogram's buckets"}


def summarize(url: str, scrapes: list[Scrape], failed: int) -> ServerMetrics | None:
    """What the result holds of the server's metrics: gauges over time, and the counters' and
    histograms' change from the first scrape to the last."""
    if not scrapes:
        return None
    first, last = scrapes[0], scrapes[-1]
    series: dict[str, list[float | None]] = {"sent_at": [round(s.sent_at, 3) for s in scrapes],
                                             "answered_at": [round(s.answered_at, 3) for s in scrapes]}
    for figure in GAUGES:
        if any(figure in s.gauges for s in scrapes):
            series[figure] = [s.gauges.get(figure) for s in scrapes]
    counters = {figure: round(last.counters[figure] - first.counters.get(figure, 0.0), 3)
                for figure in COUNTERS if figure in last.counters}
    histograms = {f"{figure}_ms": distribution_ms(last.histograms[figure].minus(first.histograms.get(figure)))
                  for figure in HISTOGRAMS if figure in last.histograms}
    raw = {name: round(value - first.raw.get(name, 0.0), 6) for name, value in sorted(last.raw.items())}
    return {"url": url, "server": last.server, "scrapes": len(scrapes), "failed_scrapes": failed,
            "series": series, "counters": counters, "histograms": histograms, "raw_change": raw}


def decomposition(client_ttft_mean_ms: float | None, client_e2e_mean_ms: float | None, client_output_tokens: int,
                  server: ServerMetrics | None) -> ServerDecomposition | None:
    """Client TTFT beside the server's TTFT, queue and prefill time (means, which histograms hold
    exactly); what is left is network + client. Tokens: the client's count beside the server's."""
    if not server:
        return None
    histograms = server["histograms"]

    def mean(name: str) -> float | None:
        histogram = histograms.get(name)
        return None if histogram is None else histogram["mean"]
    server_ttft = mean("ttft_ms")
    e2e = histograms.get("e2e_latency_ms")
    return {
        "client_ttft_mean_ms": client_ttft_mean_ms,
        "server_ttft_mean_ms": server_ttft,
        "server_queue_time_mean_ms": mean("queue_time_ms"),
        "server_prefill_time_mean_ms": mean("prefill_time_ms"),
        "network_and_client_ms": None if client_ttft_mean_ms is None or server_ttft is None
        else round(client_ttft_mean_ms - server_ttft, 3),
        "client_e2e_mean_ms": client_e2e_mean_ms,
        "server_e2e_mean_ms": mean("e2e_latency_ms"),
        "client_output_tokens": client_output_tokens,
        "server_generation_tokens": server["counters"].get("generation_tokens"),
        "server_requests": None if e2e is None else e2e["count"],
    }
