"""The mock's `/metrics`, in vLLM's names and format (prometheus_client, as vLLM itself uses), true to
what the mock served: a request "queues" for 0 s, its "prefill" is the TTFT wait, its "decode" the
time from the first token-carrying chunk to the last. Each mock process counts its own requests, so
only a mock of one process serves it (mock/server.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# vLLM's own bucket bounds (seconds) for its latency histograms.
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                   20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
TOKEN_GAP_BUCKETS = (0.001, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4,
                     0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
LABELS = {"engine": "0"}


class MockMetrics:
    def __init__(self, model: str) -> None:
        self.registry = CollectorRegistry()
        names = ["model_name", "engine"]
        self._labels = {"model_name": model, **LABELS}

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, names, registry=self.registry).labels(**self._labels)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, names, registry=self.registry).labels(**self._labels)

        def histogram(name: str, doc: str, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> Histogram:
            return Histogram(name, doc, names, buckets=buckets, registry=self.registry).labels(**self._labels)

        self.running = gauge("vllm:num_requests_running", "Requests being streamed.")
        self.waiting = gauge("vllm:num_requests_waiting", "Requests waiting (the mock never queues).")
        self.kv_cache = gauge("vllm:kv_cache_usage_perc", "KV-cache usage, 0-1 (the mock has none).")
        self.generation_tokens = counter("vllm:generation_tokens", "Tokens generated.")
        self.prompt_tokens = counter("vllm:prompt_tokens", "Prompt tokens (the mock's word count).")
        self.prefix_queries = counter("vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache.")
        self.prefix_hits = counter("vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache.")
        self.success = Counter("vllm:request_success", "Requests finished.", ["model_name", "engine",
                                                                             "finished_reason"],
                               registry=self.registry)
        self.ttft = histogram("vllm:time_to_first_token_seconds", "Request arrival -> first token sent.")
        self.itl = histogram("vllm:inter_token_latency_seconds", "Between token-carrying chunks sent.",
                             TOKEN_GAP_BUCKETS)
        self.tpot = histogram("vllm:request_time_per_output_token_seconds", "Decode time / (tokens - 1).",
                              TOKEN_GAP_BUCKETS)
        self.e2e = histogram("vllm:e2e_request_latency_seconds", "Request arrival -> stream end.")
        self.queue = histogram("vllm:request_queue_time_seconds", "Time queued (0: the mock never queues).")
        self.prefill = histogram("vllm:request_prefill_time_seconds", "Arrival -> first token sent.")
        self.decode = histogram("vllm:request_decode_time_seconds", "First token sent -> last token sent.")
        self.inference = histogram("vllm:request_inference_time_seconds", "Prefill + decode.")

    def finished(self, arrived: float, token_sends: list[tuple[float, int]], prompt_tokens: int,
                 finish_reason: str, ended: float) -> None:
        """A stream that ran to its end: ``token_sends`` are (loop time, tokens) of its token chunks."""
        if not token_sends:
            return
        first, last = token_sends[0][0], token_sends[-1][0]
        tokens = sum(n for _, n in token_sends)
        self.ttft.observe(first - arrived)
        for (earlier, _), (later, _) in zip(token_sends, token_sends[1:]):
            self.itl.observe(later - earlier)
        if tokens > 1:
            self.tpot.observe((last - first) / (tokens - 1))
        self.e2e.observe(ended - arrived)
        self.queue.observe(0.0)
        self.prefill.observe(first - arrived)
        self.decode.observe(last - first)
        self.inference.observe(last - arrived)
        self.generation_tokens.inc(tokens)
        self.prompt_tokens.inc(prompt_tokens)
        self.success.labels(finished_reason=finish_reason, **self._labels).inc()

    def prefix_cache(self, queried: int, hit: int) -> None:
        self.prefix_queries.inc(queried)
        self.prefix_hits.inc(hit)

    def text(self) -> bytes:
        return generate_latest(self.registry)
