"""How real endpoints stream, end to end: the mock server speaks each dialect, real worker processes
measure it (`tokenbench run --mode mock`), and the report must say what the wire said."""

from __future__ import annotations

from statistics import mean

import pytest
from aiohttp import web

from tests.conftest import serve_app
from tests.helpers import load, tokenbench
from tokenbench.mock.server import MockServer, MockSettings

pytestmark = pytest.mark.integration


def run_mock(redis_url: str, tmp_path, *flags: str, mock: tuple[str, ...] = (), prompts: int = 2,
             max_tokens: int = 6, ttft_ms: float = 5, itl_ms: float = 5, expect_rc: int = 0) -> dict:
    out = tmp_path / "r.json"
    options = [arg for option in mock for arg in ("--mock-option", option)]
    result = tokenbench("run", "--mode", "mock", "--prompts", str(prompts), "--concurrency", "1",
                        "--max-tokens", str(max_tokens), "--mock-ttft-ms", str(ttft_ms), "--mock-itl-ms", str(itl_ms),
                        "--redis-url", redis_url, "--output", str(out), *options, *flags)
    assert result.returncode == expect_rc, result.stderr
    return load(out)


@pytest.mark.parametrize("variants", [
    "crlf", "cr", "bom", "multiline", "fields", "batch=4",
    "crlf,split=1",  # every CRLF split across two reads
    "unicode,split=3",  # multi-byte characters and U+2028/U+2029 split across reads
    "cr,bom,multiline,fields,unicode,split=5",
])
def test_sse_framing_variants_measure_the_same_stream(variants, redis_url, tmp_path):
    report = run_mock(redis_url, tmp_path, mock=(f"sse={variants}",))
    assert (report["successful_runs"], report["failed_runs"]) == (2, 0), report["errors"]
    for result in report["results"]:
        assert result["output_tokens"] == 6 and len(result["chunk_offsets_ms"]) == 6
        assert result["finish_reason"] == "length"


def test_keep_alive_comments_are_neither_first_byte_of_a_token_nor_ttft(redis_url, tmp_path):
    report = run_mock(redis_url, tmp_path, mock=("keepalive-ms=10",), ttft_ms=200)
    for result in report["results"]:
        # The comments start at once, but the first token (sent 200 ms in) is what TTFT times.
        assert result["headers_ms"] < 200 <= result["ttft_ms"] == result["chunk_offsets_ms"][0]
    assert report["successful_runs"] == 2


# style -> (extra mock options, the reasoning_tokens_source the record must carry)
REASONING_CASES = {
    "reasoning": (("continuous-usage",), "chunk_usage"),
    "reasoning_content": (("usage-style=openrouter",), "usage"),
    "reasoning_details": (("usage-style=openrouter",), "usage"),
    "reasoning_details_cumulative": (("continuous-usage",), "chunk_usage"),
    "think": ((), "estimate"),
}


@pytest.mark.parametrize("style", sorted(REASONING_CASES))
def test_reasoning_styles_give_ttft_ttfat_and_the_token_split(style, redis_url, tmp_path):
    options, source = REASONING_CASES[style]
    report = run_mock(redis_url, tmp_path, mock=(f"reasoning={style}", "reasoning-tokens=4", *options),
                      max_tokens=10, ttft_ms=30, itl_ms=20)
    assert report["successful_runs"] == 2, report["errors"]
    for result in report["results"]:
        # Which chunk each one is (exact, whatever the machine's load), and never before it was sent.
        assert 30 <= result["ttft_ms"] == result["chunk_offsets_ms"][0]  # the first reasoning token
        assert 30 + 4 * 20 <= result["ttfat_ms"] == result["chunk_offsets_ms"][4]  # the first answer token
        assert result["reasoning_tokens_source"] == source
        if source == "estimate":  # from the share of characters: close, and labelled as such
            assert abs(result["reasoning_tokens"] - 4) <= 1
        else:
            assert result["reasoning_tokens"] == 4
        assert result["reasoning_tokens"] + result["answer_tokens"] == 10
    assert report["total_reasoning_tokens"] + report["total_answer_tokens"] == 20
    assert report["ttfat_ms"]["p50"] > report["ttft_ms"]["p50"]


def test_multi_token_chunks_give_per_token_itl_when_running_usage_says_how_many(redis_url, tmp_path):
    report = run_mock(redis_url, tmp_path, mock=("tokens-per-chunk=4", "continuous-usage"), max_tokens=16,
                      itl_ms=10)
    assert report["itl_source"] == {"usage": 2}
    assert report["mean_tokens_per_chunk"] == 4
    for result in report["results"]:
        assert result["chunk_tokens"] == [4, 4, 4, 4] and result["output_tokens"] == 16
    # 40 ms between chunks of 4 tokens: a quarter of each gap per token.
    assert report["inter_chunk_ms"]["p50"] >= 38
    assert report["itl_ms"]["p50"] == pytest.approx(report["inter_chunk_ms"]["p50"] / 4, rel=0.02)
    # vLLM's TPOT, (e2e - TTFT) / (tokens - 1), counts the first chunk's 3 extra tokens as free:
    # (3 chunks x 40 ms) / 15 = 8 ms, not 10. docs/metrics.md says so.
    assert report["tpot_ms"]["mean"] == pytest.approx(mean(
        (r["latency_ms"] - r["ttft_ms"]) / 15 for r in report["results"]), abs=1e-3)
    assert 7.5 <= report["tpot_ms"]["mean"] < 9.5


def test_multi_token_chunks_counted_from_logprobs(redis_url, tmp_path):
    report = run_mock(redis_url, tmp_path, mock=("tokens-per-chunk=4", "logprobs"), max_tokens=16, itl_ms=10)
    assert report["itl_source"] == {"logprobs": 2}
    for result in report["results"]:
        assert result["chunk_tokens"] == [4, 4, 4, 4]
    assert report["inter_chunk_ms"]["p50"] >= 38
    assert report["itl_ms"]["p50"] == pytest.approx(report["inter_chunk_ms"]["p50"] / 4, rel=0.02)


def test_multi_token_chunks_without_counts_fall_back_to_the_gaps_and_say_so(redis_url, tmp_path):
    report = run_mock(redis_url, tmp_path, mock=("tokens-per-chunk=4",), max_tokens=16, itl_ms=10)
    assert report["itl_source"] == {"chunks": 2}
    assert report["itl_ms"]["p50"] >= 38 and report["itl_ms"] == report["inter_chunk_ms"]
    assert report["mean_tokens_per_chunk"] == 4  # usage at the end still counts the tokens


def test_openrouter_usage_chunk_provider_generation_and_cost(redis_url, tmp_path):
    report = run_mock(redis_url, tmp_path, mock=("usage-style=openrouter",), max_tokens=5)
    assert report["providers"] == {"MockProvider": 2}
    for result in report["results"]:
        assert result["output_tokens"] == 5 and len(result["chunk_offsets_ms"]) == 5  # usage chunk is no token
        assert result["generation_id"].startswith("gen-")
        assert result["cost"] > 0
    assert report["total_cost"] == pytest.approx(sum(r["cost"] for r in report["results"]))


@pytest.mark.parametrize("style", ["null-choices", "no-choices"])
def test_usage_chunks_without_a_choices_list_are_not_tokens(style, redis_url, tmp_path):
    report = run_mock(redis_url, tmp_path, mock=(f"usage-style={style}",), max_tokens=5)
    for result in report["results"]:
        assert result["success"] and result["output_tokens"] == 5 and len(result["chunk_offsets_ms"]) == 5
        assert result["output_tokens_source"] == "usage"


@pytest.mark.parametrize("style", ["openrouter", "openai", "vllm"])
def test_an_error_inside_a_200_stream_is_a_failed_request_with_the_message(style, redis_url, tmp_path):
    report = run_mock(redis_url, tmp_path, "--mock-fault", "error", "--mock-fault-after", "3",
                      mock=(f"error-style={style}",), expect_rc=1)
    assert report["failed_runs"] == 2
    for result in report["results"]:
        assert (result["error_type"], result["http_status"]) == ("stream_error", 200)
        assert "provider disconnected mid-stream" in result["error"]
        assert result["output_tokens"] == 3
    assert report["errors"]["stream_error"]["count"] == 2


def test_an_http_error_keeps_its_status_and_message(redis_url, tmp_path):
    report = run_mock(redis_url, tmp_path, "--mock-fault", "http_error", "--mock-fault-rate", "0.5",
                      "--max-error-rate", "0.5")
    failed = [r for r in report["results"] if not r["success"]]
    assert [(r["error_type"], r["http_status"]) for r in failed] == [("http_error", 500)]
    assert "injected server error" in failed[0]["error"]


def test_429_is_retried_after_retry_after_and_every_attempt_is_in_the_record(redis_url, tmp_path):
    # The mock refuses every other request it sees: #1, and the retries push the rest to odd numbers too.
    report = run_mock(redis_url, tmp_path, "--mock-fault", "rate_limit", "--mock-fault-rate", "0.5",
                      "--max-retries", "1", prompts=4)
    assert (report["successful_runs"], report["retried_runs"], report["rate_limited_runs"]) == (4, 3, 0)
    retried = [r for r in report["results"] if r["retries"]]
    for result in retried:
        assert result["retries"] == [{"http_status": 429, "error_type": "rate_limited",
                                      "error": "HTTP 429: mock: rate limit exceeded", "retry_after_s": 1.0}]
        assert 1000 <= result["retry_wait_ms"] < 1000 + 1000  # Retry-After: 1, not a second retry
        assert result["ttft_ms"] < result["retry_wait_ms"]  # timed from the attempt that was served


def test_503_with_retry_after_is_retried_but_not_counted_as_rate_limited(redis_url, tmp_path):
    report = run_mock(redis_url, tmp_path, "--mock-fault", "overloaded", "--mock-fault-rate", "0.5",
                      "--max-retries", "1", prompts=2)
    assert (report["successful_runs"], report["retried_runs"], report["rate_limited_runs"]) == (2, 1, 0)
    retried = next(r for r in report["results"] if r["retries"])
    assert retried["retries"][0]["http_status"] == 503 and retried["retries"][0]["error_type"] == "http_error"


def test_429_without_retries_is_counted_apart_from_other_failures(redis_url, tmp_path):
    report = run_mock(redis_url, tmp_path, "--mock-fault", "rate_limit", "--mock-fault-rate", "0.5", prompts=4,
                      expect_rc=1)
    assert (report["successful_runs"], report["rate_limited_runs"]) == (2, 2)
    assert report["errors"]["rate_limited"]["count"] == 2


def test_anthropic_messages_api_with_thinking_end_to_end(redis_url, tmp_path):
    report = run_mock(redis_url, tmp_path, "--api", "anthropic", mock=("reasoning=think", "reasoning-tokens=4",
                                                                       "tokens-per-chunk=2"),
                      max_tokens=10, ttft_ms=30, itl_ms=20)
    assert report["successful_runs"] == 2, report["errors"]
    for result in report["results"]:
        assert result["finish_reason"] == "max_tokens" and result["output_tokens_source"] == "usage"
        assert result["output_tokens"] == 10 and len(result["chunk_offsets_ms"]) == 5
        # The first chunk holds two tokens; the third chunk is the first answer (after 4 reasoning tokens).
        assert 30 + 20 <= result["ttft_ms"] == result["chunk_offsets_ms"][0]
        assert 30 + 5 * 20 <= result["ttfat_ms"] == result["chunk_offsets_ms"][2]
        assert (result["reasoning_tokens"], result["reasoning_tokens_source"]) == (4, "estimate")


def test_responses_api_with_reasoning_end_to_end(redis_url, tmp_path):
    report = run_mock(redis_url, tmp_path, "--api", "responses", mock=("reasoning=think", "reasoning-tokens=4"),
                      max_tokens=10, ttft_ms=30, itl_ms=20)
    assert report["successful_runs"] == 2, report["errors"]
    for result in report["results"]:
        assert result["output_tokens"] == 10 and len(result["chunk_offsets_ms"]) == 10
        # Reasoning events first (response.reasoning_text.delta), the answer from the fifth token on.
        assert 30 <= result["ttft_ms"] == result["chunk_offsets_ms"][0]
        assert 30 + 4 * 20 <= result["ttfat_ms"] == result["chunk_offsets_ms"][4]
        assert (result["reasoning_tokens"], result["reasoning_tokens_source"]) == (4, "usage")
        assert result["answer_tokens"] == 6


def test_anthropic_error_event_mid_stream(redis_url, tmp_path):
    report = run_mock(redis_url, tmp_path, "--api", "anthropic", "--mock-fault", "error", expect_rc=1)
    assert report["errors"]["stream_error"]["count"] == 2
    assert "overloaded mid-stream" in report["errors"]["stream_error"]["example"]


def test_request_options_reach_the_server_in_each_api(redis_url, tmp_path):
    seen: list[tuple[str, dict, dict]] = []
    mock = MockServer(MockSettings(ttft_ms=1, itl_ms=1))

    async def capture(request: web.Request) -> web.StreamResponse:
        seen.append((request.path, await request.json(), dict(request.headers)))
        answer = {"/v1/messages": mock.messages, "/v1/completions": mock.completions,
                  "/v1/responses": mock.responses}.get(request.path, mock.chat_completions)
        return await answer(request)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", capture)
    app.router.add_post("/v1/messages", capture)
    app.router.add_post("/v1/completions", capture)
    app.router.add_post("/v1/responses", capture)
    common = ["--base-url", "{url}/v1", "--prompts", "1", "--max-tokens", "3", "--redis-url", redis_url,
              "--no-preflight"]
    with serve_app(app) as url:
        for mode, extra in (("openrouter", ["--reasoning-effort", "high"]),
                            ("openai", ["--model", "m", "--reasoning-effort", "low", "--ignore-eos"]),
                            ("openai", ["--model", "m", "--api", "anthropic"]),
                            ("openai", ["--model", "m", "--api-key-header", "api-key"]),
                            ("openai", ["--model", "m", "--max-tokens-param", "max_completion_tokens",
                                        "--extra-body", '{"stream_options": null}']),
                            ("openai", ["--model", "m", "--api", "completions"]),
                            ("openai", ["--model", "m", "--api", "responses", "--reasoning-effort", "low"])):
            args = [a.replace("{url}", url) for a in common]
            result = tokenbench("run", "--mode", mode, "--api-key", "sk-test", *args, *extra)
            assert result.returncode == 0, result.stderr
    (path1, body1, headers1), (path2, body2, _), (path3, body3, headers3), (_, _, headers4), (_, body5, _), \
        (path6, body6, headers6), (path7, body7, _) = seen
    assert path1 == "/v1/chat/completions" and body1["reasoning"] == {"effort": "high"}
    assert headers1["X-OpenRouter-Title"] == headers1["X-Title"] == "tokenbench" and "HTTP-Referer" in headers1
    assert headers1["Authorization"] == "Bearer sk-test"
    assert body2["reasoning_effort"] == "low" and body2["ignore_eos"] is True and "reasoning" not in body2
    assert path3 == "/v1/messages" and body3["stream"] is True and body3["max_tokens"] == 3
    assert headers3["x-api-key"] == "sk-test" and headers3["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in headers3 and "stream_options" not in body3
    assert headers4["api-key"] == "sk-test" and "Authorization" not in headers4
    assert body5["max_completion_tokens"] == 3 and "max_tokens" not in body5 and "stream_options" not in body5
    assert path6 == "/v1/completions" and "messages" not in body6 and body6["max_tokens"] == 3
    assert isinstance(body6["prompt"], str) and body6["prompt"] and headers6["Authorization"] == "Bearer sk-test"
    assert path7 == "/v1/responses" and body7["max_output_tokens"] == 3 and body7["reasoning"] == {"effort": "low"}
    assert isinstance(body7["input"], list) and "messages" not in body7 and body7["stream"] is True


def test_the_completions_api_end_to_end(redis_url, tmp_path):
    """--api completions against the mock's /v1/completions: tokens, usage and timing as for chat."""
    report = run_mock(redis_url, tmp_path, "--api", "completions", "--ignore-eos", mock=("tokens-per-chunk=2",),
                      max_tokens=10, ttft_ms=30, itl_ms=10)
    assert report["successful_runs"] == 2, report["errors"]
    for result in report["results"]:
        assert (result["output_tokens"], result["output_tokens_source"]) == (10, "usage")
        assert len(result["chunk_offsets_ms"]) == 5 and result["finish_reason"] == "length"
        assert 30 + 10 <= result["ttft_ms"] == result["chunk_offsets_ms"][0]  # the first chunk holds two tokens
        assert result["input_tokens"] > 0


def test_the_responses_api_end_to_end(redis_url, tmp_path):
    """--api responses against the mock's /v1/responses: typed events, usage in response.incomplete
    (max_output_tokens reached), the prefix cache's cached tokens in input_tokens_details."""
    report = run_mock(redis_url, tmp_path, "--api", "responses", mock=("prefix-cache",), max_tokens=6, prompts=2)
    assert report["successful_runs"] == 2, report["errors"]
    for result in report["results"]:
        assert (result["output_tokens"], result["output_tokens_source"], result["finish_reason"]) == (6, "usage",
                                                                                                   "length")
        assert len(result["chunk_offsets_ms"]) == 6 and result["cached_tokens"] is not None
