"""Workloads and configs: synthetic lengths counted by a real tokenizer, ShareGPT samples, TOML
config files, and a result that says what produced it."""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path

import click
import orjson
import pytest
from tokenizers import ByteLevelBPETokenizer

from tests.helpers import load, tokenbench
from tokenbench.cli import cli
from tokenbench.producer.prompts import BUILTIN_PROMPTS
from tokenbench.producer.sharegpt import load_sharegpt
from tokenbench.producer.synthetic import _VOCABULARY, LengthSpec, synthetic_prompts
from tokenbench.producer.tokenizer import EstimatedCounter, HuggingFaceTokenizer
from tokenbench.producer.workloads import WorkloadSpec, build_workload


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory) -> Path:
    """A real byte-level BPE tokenizer.json, trained here (no model files can be downloaded)."""
    corpus = [p.text for p in BUILTIN_PROMPTS] + [" ".join(_VOCABULARY[i:] + _VOCABULARY[:i]) for i in range(50)]
    trained = ByteLevelBPETokenizer()
    trained.train_from_iterator(corpus, vocab_size=600, min_frequency=2, show_progress=False)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    trained.save(str(path))
    return path


def test_synthetic_prompts_have_exactly_the_asked_length_with_a_tokenizer(tokenizer_file):
    counter = HuggingFaceTokenizer(tokenizer_file)
    prompts = synthetic_prompts(20, LengthSpec(300), seed=5, counter=counter)
    assert [counter.count(p.text) for p in prompts] == [300] * 20
    assert [p.input_tokens for p in prompts] == [300] * 20
    assert len({p.text for p in prompts}) == 20  # distinct prompts: no shared prefix cache hits
    spread = synthetic_prompts(400, LengthSpec(200, 40), seed=5, counter=counter)
    lengths = [counter.count(p.text) for p in spread]
    assert statistics.fmean(lengths) == pytest.approx(200, rel=0.03)
    assert statistics.pstdev(lengths) == pytest.approx(40, rel=0.12)


def test_the_seed_makes_a_workload_repeatable():
    counter = EstimatedCounter()
    first = synthetic_prompts(5, LengthSpec(50, 10), seed=1, counter=counter)
    assert first == synthetic_prompts(5, LengthSpec(50, 10), seed=1, counter=counter)
    assert first != synthetic_prompts(5, LengthSpec(50, 10), seed=2, counter=counter)


def test_without_a_tokenizer_lengths_are_marked_approximate():
    built = build_workload(WorkloadSpec(num_prompts=4, input_tokens=LengthSpec(64), output_tokens=LengthSpec(32)))
    prompts, workload = built.prompts, built.description
    assert workload["tokenizer"] == "estimate" and workload["lengths"].startswith("approximate")
    assert [p.max_tokens for p in prompts] == [32] * 4
    assert all(abs(len(p.text) / 4 - 64) <= 2 for p in prompts)


def write_sharegpt(path: Path) -> Path:
    def conversation(i: int, human: str, gpt: str | None) -> dict:
        turns = [{"from": "human", "value": human}] + ([{"from": "gpt", "value": gpt}] if gpt else [])
        return {"id": f"conv-{i}", "conversations": turns}

    entries = [conversation(i, f"Explain the history of the river city number {i} in detail please",
                            "The river city grew around its harbour and bridge " * (1 + i % 3)) for i in range(12)]
    entries += [conversation(100, "A question with no answer recorded here", None),  # one turn: left out
                conversation(101, "hi", "The answer is long enough to count"),  # prompt under 4 tokens
                conversation(102, "word " * 1100, "An answer to a prompt that is far too long")]  # > 1024 tokens
    path.write_bytes(orjson.dumps(entries))
    return path


def test_sharegpt_samples_like_vllm(tmp_path, tokenizer_file):
    counter = HuggingFaceTokenizer(tokenizer_file)
    path = write_sharegpt(tmp_path / "sharegpt.json")
    prompts, kept = load_sharegpt(path, 8, seed=3, counter=counter)
    assert kept == {"conversations": 15, "usable": 12} and len(prompts) == 8
    assert all(p.id.startswith("conv-") and int(p.id[5:]) < 12 for p in prompts)
    answers = {e["id"]: e["conversations"][1]["value"] for e in orjson.loads(path.read_bytes())[:12]}
    assert all(p.max_tokens == counter.count(answers[p.id]) for p in prompts)  # the recorded answer's length
    assert [p.id for p in prompts] == [p.id for p in load_sharegpt(path, 8, seed=3, counter=counter)[0]]
    assert [p.id for p in prompts] != [p.id for p in load_sharegpt(path, 8, seed=4, counter=counter)[0]]


@pytest.mark.parametrize("content, complaint", [
    (b'{"not": "a list"}', "JSON list of conversations"),
    (b'[{"conversations": "nope"}]', "conversation 0: expected"),
    (b"[1, 2", "not JSON"),
])
def test_a_bad_sharegpt_file_is_a_one_line_error(tmp_path, content, complaint):
    (tmp_path / "bad.json").write_bytes(content)
    outcome = tokenbench("run", "--mode", "mock", "--dataset", "sharegpt", "--dataset-path", str(tmp_path / "bad.json"))
    assert outcome.returncode == 2 and complaint in outcome.stderr and "bad.json" in outcome.stderr
    assert len(outcome.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("flags, complaint", [
    (["--input-tokens-stddev", "3"], "--input-tokens-stddev needs --input-tokens"),
    (["--dataset", "sharegpt"], "--dataset and --dataset-path go together"),
    (["--input-tokens", "10", "--prompts-file", "x.txt"], "choose one source of prompts"),
])
def test_conflicting_workload_flags_are_one_line_errors(flags, complaint):
    outcome = tokenbench("run", "--mode", "mock", *flags)
    assert outcome.returncode == 2 and complaint in outcome.stderr
    assert len(outcome.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("content, complaint", [
    ("concurency = 3\n", "unknown option 'concurency'"),
    ("concurrency = 'many'\n", "concurrency: 'many' is not a valid integer"),
    ("api-key = 'sk-123'\n", "keep secrets out of files"),
    ("mode = \n", "is not valid TOML"),
    # what the property test found (tracebacks): a boolean for a path, a number for a path (click's
    # Path takes an int as a file descriptor), an infinite float for a count, a number for a switch
    ("tokenizer = false\n", "tokenizer: takes a value, not true or false"),
    ("tokenizer = 2147483648\n", "tokenizer: File '2147483648' does not exist"),
    ("output-tokens = inf\n", "output-tokens: 'inf' is not a valid integer"),
    ("no-preflight = 1\n", "no-preflight: takes true or false"),
])
def test_a_bad_config_file_is_a_one_line_error_naming_it(tmp_path, content, complaint):
    (tmp_path / "bench.toml").write_text(content)
    outcome = tokenbench("run", "--config", str(tmp_path / "bench.toml"))
    assert outcome.returncode == 2 and complaint in outcome.stderr and "bench.toml" in outcome.stderr
    assert len(outcome.stderr.strip().splitlines()) == 1


@pytest.mark.integration
def test_a_config_file_benchmark_with_synthetic_lengths_explains_itself(redis_url, tmp_path, tokenizer_file):
    (tmp_path / "bench.toml").write_text(f"""
mode = "mock"
concurrency = 3
prompts = 12
input-tokens = 120
output-tokens = 16
output-tokens-stddev = 4
tokenizer = "{tokenizer_file}"
seed = 11
mock-ttft-ms = 10
mock-itl-ms = 2
slo = {{ ttft = 500, e2el = 5000 }}
header = ["X-Team: infra"]
""")
    outcome = tokenbench("run", "--config", str(tmp_path / "bench.toml"), "--concurrency", "2",
                         "--api-key", "sk-never-in-results", "--redis-url", redis_url,
                         "--output", str(tmp_path / "r.json"))
    assert outcome.returncode == 0, outcome.stderr
    report = load(tmp_path / "r.json")
    config = report["config"]
    assert config["config_file"] == str(tmp_path / "bench.toml")
    assert config["concurrency"] == 2 and report["concurrency"] == 2  # the flag beat the file
    assert (config["num_prompts"], config["input_tokens"], config["seed"]) == (12, 120, 11)
    assert config["slo"] == {"ttft": 500.0, "e2el": 5000.0} and config["headers"] == {"X-Team": "infra"}
    assert "api_key" not in config and "sk-never-in-results" not in (tmp_path / "r.json").read_text()

    workload = report["workload"]
    assert workload["source"] == "synthetic" and workload["lengths"] == "exact"
    assert workload["prompt_tokens"]["min"] == workload["prompt_tokens"]["max"] == 120
    # Each request asked for its own drawn max_tokens, and the mock streamed exactly that many.
    drawn = [r["output_tokens"] for r in sorted(report["results"], key=lambda r: r["index"])]
    assert len(set(drawn)) > 2 and 8 <= statistics.fmean(drawn) <= 24
    again = tokenbench("run", "--config", str(tmp_path / "bench.toml"), "--concurrency", "2",
                       "--redis-url", redis_url, "--output", str(tmp_path / "again.json"))
    assert again.returncode == 0, again.stderr
    assert [r["output_tokens"] for r in sorted(load(tmp_path / "again.json")["results"], key=lambda r: r["index"])] \
        == drawn  # the same seed, the same workload

    environment = report["worker_environment"]
    assert len(environment) == 2 and report["python_versions"] == {platform.python_version(): 2}
    assert all(env["host"] == report["hosts"][0] and env["tokenbench"] == report["tokenbench_version"]
               for env in environment.values())
    assert "prompts      synthetic: 120.0 tokens on average (counted), seed 11" in outcome.stdout


@pytest.mark.integration
def test_a_sharegpt_run_sends_the_sampled_prompts(redis_url, tmp_path, tokenizer_file):
    path = write_sharegpt(tmp_path / "sharegpt.json")
    outcome = tokenbench("run", "--mode", "mock", "--dataset", "sharegpt", "--dataset-path", str(path),
                         "--tokenizer", str(tokenizer_file), "--prompts", "5", "--concurrency", "2",
                         "--mock-ttft-ms", "5", "--mock-itl-ms", "1", "--redis-url", redis_url,
                         "--output", str(tmp_path / "r.json"))
    assert outcome.returncode == 0, outcome.stderr
    report = load(tmp_path / "r.json")
    assert report["workload"]["source"] == "sharegpt" and report["workload"]["usable"] == 12
    assert report["successful_runs"] == 5 and {r["category"] for r in report["results"]} == {"sharegpt"}
    expected, _ = load_sharegpt(path, 5, 0, HuggingFaceTokenizer(tokenizer_file))
    assert [r["prompt_id"] for r in sorted(report["results"], key=lambda r: r["index"])] == [p.id for p in expected]
    assert [r["output_tokens"] for r in sorted(report["results"], key=lambda r: r["index"])] == \
        [p.max_tokens for p in expected]


def test_a_sweep_config_takes_its_levels_as_a_list(tmp_path):
    (tmp_path / "sweep.toml").write_text("mode = 'mock'\nconcurrency = [1, 0]\n")
    outcome = tokenbench("sweep", "--config", str(tmp_path / "sweep.toml"))
    assert outcome.returncode == 2
    assert "sweep.toml: concurrency: give one or more levels of at least 1" in outcome.stderr


def test_the_readme_config_example_is_a_valid_config(tmp_path, tokenizer_file):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    example = example.replace('"models/MiniMax-M2.5/tokenizer.json"', f'"{tokenizer_file}"')
    (tmp_path / "bench.toml").write_text(example)
    context = cli.get_command(click.Context(cli), "run").make_context("run", ["--config", str(tmp_path / "bench.toml")])
    assert context.params["concurrency"] == 16 and context.params["slo"] == {"ttft": 2000.0, "tpot": 50.0}
    assert context.params["input_tokens"] == 1024 and context.params["ignore_eos"] is True


@pytest.mark.integration
def test_without_usage_a_tokenizer_counts_the_streamed_text(tokenizer_file, redis_url, tmp_path):
    """A server that sends no usage (llama.cpp's; here the mock asked for none): with --tokenizer the
    streamed text is counted, without one the chunks are, and the result says they are estimates."""
    from tokenbench.mock.shapes import token_text

    common = ("run", "--mode", "mock", "--prompts", "2", "--max-tokens", "12", "--mock-ttft-ms", "2",
              "--mock-itl-ms", "1", "--mock-option", "tokens-per-chunk=3", "--extra-body", '{"stream_options": null}',
              "--redis-url", redis_url)
    counted = tokenbench(*common, "--tokenizer", str(tokenizer_file), "--output", str(tmp_path / "t.json"))
    assert counted.returncode == 0, counted.stderr
    report = load(tmp_path / "t.json")
    truth = HuggingFaceTokenizer(tokenizer_file).count("".join(token_text(i) for i in range(12)))
    assert [(r["output_tokens"], r["output_tokens_source"]) for r in report["results"]] == [(truth, "tokenizer")] * 2
    assert report["estimated_figures"] == [] and "output_text" not in (tmp_path / "t.json").read_text()
    chunked = tokenbench(*common, "--output", str(tmp_path / "c.json"))
    assert chunked.returncode == 0, chunked.stderr
    report = load(tmp_path / "c.json")
    assert [(r["output_tokens"], r["output_tokens_source"]) for r in report["results"]] == [(4, "chunks")] * 2
    assert "total_output_tokens" in report["estimated_figures"] and "estimated " in chunked.stdout


def test_shared_prefixes_start_the_prompts_in_turn_and_the_rest_is_their_own(tokenizer_file):
    from tokenbench.producer.synthetic import SharedPrefixes

    counter = HuggingFaceTokenizer(tokenizer_file)
    prompts = synthetic_prompts(8, LengthSpec(120), seed=3, counter=counter, prefixes=SharedPrefixes(80, groups=2))
    shared = [os.path.commonprefix([p.text for p in prompts[group::2]]) for group in (0, 1)]
    # Each group's prompts share (at least) its 80-token prefix; the two groups' prefixes differ.
    assert all(counter.count(prefix.rstrip()) >= 80 for prefix in shared), [counter.count(p) for p in shared]
    assert shared[0][:40] != shared[1][:40]
    assert len({p.text for p in prompts}) == 8  # each prompt's own part differs
    assert [p.category for p in prompts] == ["prefix-0", "prefix-1"] * 4
    assert [counter.count(p.text) for p in prompts] == [120] * 8 == [p.input_tokens for p in prompts]


@pytest.mark.parametrize("flags, complaint", [
    (["--prefix-tokens", "50"], "--prefix-tokens needs --input-tokens"),
    (["--input-tokens", "40", "--prefix-tokens", "50"], "50 is not shorter than --input-tokens 40"),
    (["--input-tokens", "100", "--prefix-groups", "3"], "--prefix-groups needs --prefix-tokens"),
])
def test_shared_prefix_options_that_do_not_fit_are_usage_errors(flags, complaint):
    done = tokenbench("run", "--mode", "mock", *flags)
    assert done.returncode == 2 and complaint in done.stderr


@pytest.mark.integration
def test_shared_prefixes_against_the_mocks_prefix_cache(redis_url, tmp_path):
    """The first prompt of each prefix group misses the mock's cache; the rest hit its prefix, get a
    shorter TTFT, and the report and the mock's /metrics count the cached tokens."""
    out = tmp_path / "r.json"
    done = tokenbench("run", "--mode", "mock", "--prompts", "8", "--concurrency", "1", "--input-tokens", "400",
                      "--prefix-tokens", "320", "--prefix-groups", "2", "--max-tokens", "4", "--mock-ttft-ms", "1000",
                      "--mock-itl-ms", "1", "--mock-option", "prefix-cache", "--redis-url", redis_url,
                      "--output", str(out))
    assert done.returncode == 0, done.stderr
    report = load(out)
    results = sorted(report["results"], key=lambda r: r["index"])
    assert [r["cached_tokens"] for r in results[:2]] == [0, 0]
    assert all(r["cached_tokens"] > 0.5 * r["input_tokens"] for r in results[2:])
    # A hit computes only what the cache lacked (~200 ms of the mock's 1,000): below every miss's TTFT,
    # with 800 ms to spare for a loaded machine.
    assert max(r["ttft_ms"] for r in results[2:]) < 1000 <= min(r["ttft_ms"] for r in results[:2])
    assert report["total_cached_tokens"] == sum(r["cached_tokens"] for r in results)
    assert 0.5 < report["cached_token_share"] < 1
    counters = report["server_metrics"]["counters"]
    assert counters["prefix_cache_hits"] == report["total_cached_tokens"]
    assert counters["prefix_cache_queries"] == report["total_input_tokens"]
    assert set(report["categories"]) == {"prefix-0", "prefix-1"}


def test_the_mocks_prefix_cache_hits_only_a_shared_prefix_in_whole_blocks():
    from tokenbench.mock.prefix_cache import BLOCK_WORDS, PrefixCache

    cache = PrefixCache()
    words = [f"w{i}" for i in range(3 * BLOCK_WORDS + 5)]
    assert cache.hit_and_store(words) == 0
    assert cache.hit_and_store(words) == 3 * BLOCK_WORDS  # whole blocks only: the 5 words after are not one
    assert cache.hit_and_store(words[:BLOCK_WORDS] + ["other"] * 40) == BLOCK_WORDS
    # The same blocks after a different start are not a prefix: no hit.
    assert cache.hit_and_store(["start"] * BLOCK_WORDS + words) == 0


def _mooncake(tmp_path, rows: list[tuple[int, int, int]]) -> Path:
    path = tmp_path / "trace.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"timestamp": t, "input_length": i, "output_length": o,
                                            "hash_ids": [1, 2]}) + b"\n" for t, i, o in rows))
    return path


def test_traces_are_read_in_time_order_with_their_lengths_and_bad_lines_named(tmp_path, tokenizer_file):
    from tokenbench.producer.prompt_files import PromptFileError
    from tokenbench.producer.trace import TraceRow, read_trace, trace_prompts

    jsonl = _mooncake(tmp_path, [(0, 30, 5), (2500, 40, 6), (1000, 20, 7)])  # Mooncake: milliseconds
    assert read_trace(jsonl) == [TraceRow(0.0, 30, 5, (1, 2)), TraceRow(1.0, 20, 7, (1, 2)),
                                 TraceRow(2.5, 40, 6, (1, 2))]
    csv_path = tmp_path / "trace.csv"
    csv_path.write_text("timestamp,input_tokens,output_tokens\n10.5,12,3\n10,8,2\n")  # seconds
    assert read_trace(csv_path) == [TraceRow(10.0, 8, 2), TraceRow(10.5, 12, 3)]
    counter = HuggingFaceTokenizer(tokenizer_file)
    prompts = trace_prompts(read_trace(jsonl), speed=2.0, seed=0, counter=counter)
    assert [(counter.count(p.text), p.max_tokens, p.arrival_s) for p in prompts] == [(30, 5, 0.0), (20, 7, 0.5),
                                                                                   (40, 6, 1.25)]
    for name, text, complaint in (("bad.csv", "timestamp,input_tokens\n1,2\n", "bad.csv:1: no output_tokens column"),
                                  ("bad.jsonl", '{"timestamp": 0, "input_length": 3, "output_length": 0}\n',
                                   "bad.jsonl:1: input_length and output_length must be at least 1"),
                                  ("nan.jsonl", '\n{"timestamp": "x", "input_length": 3, "output_length": 2}\n',
                                   "nan.jsonl:2: timestamp, input_length, output_length must be numbers")):
        (tmp_path / name).write_text(text)
        with pytest.raises(PromptFileError, match=complaint):
            read_trace(tmp_path / name)


def _blocks_trace(tmp_path, rows: list[tuple[int, int, list[int]]]) -> Path:
    path = tmp_path / "blocks.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"timestamp": t, "input_length": i, "output_length": 4, "hash_ids": h})
                              + b"\n" for t, i, h in rows))
    return path


def test_mooncake_hash_ids_are_replayed_as_shared_blocks_of_text(tmp_path):
    from tokenbench.producer.prompt_files import PromptFileError
    from tokenbench.producer.tokenizer import EstimatedCounter
    from tokenbench.producer.trace import BLOCK_TOKENS, read_trace, trace_prompts

    counter = EstimatedCounter()
    trace = _blocks_trace(tmp_path, [(0, 1536, [1, 2, 3]), (10, 1536, [1, 2, 9]), (20, 600, [7]), (30, 100, [1])])
    first, second, third, fourth = (p.text for p in trace_prompts(read_trace(trace), 1.0, 0, counter))
    assert [counter.count(text) for text in (first, second, third, fourth)] == [1536, 1536, 600, 100]
    shared = len(os.path.commonprefix([first, second]))
    # Blocks 1 and 2 (2 x 512 tokens, about 4 characters each) are the same text; block 3 and 9 are not.
    assert 2 * BLOCK_TOKENS * 4 - 8 <= shared < 3 * BLOCK_TOKENS * 4 - 100
    assert first.startswith(fourth)  # a shorter prompt with block 1: that block, cut to its length
    assert len(os.path.commonprefix([first, third])) < 40  # other blocks: other words from the start
    (tmp_path / "bad.jsonl").write_text('{"timestamp": 0, "input_length": 3, "output_length": 2, "hash_ids": "x"}\n')
    with pytest.raises(PromptFileError, match="bad.jsonl:1: hash_ids must be a list of whole numbers"):
        read_trace(tmp_path / "bad.jsonl")


@pytest.mark.integration
def test_a_traces_shared_blocks_hit_the_mocks_prefix_cache(tmp_path, redis_url):
    trace = _blocks_trace(tmp_path, [(0, 1024, [1, 2]), (300, 1024, [1, 2]), (600, 1024, [3, 4])])
    out = tmp_path / "r.json"
    done = tokenbench("run", "--mode", "mock", "--trace", str(trace), "--concurrency", "1", "--mock-ttft-ms", "5",
                      "--mock-itl-ms", "1", "--mock-option", "prefix-cache", "--redis-url", redis_url,
                      "--output", str(out))
    assert done.returncode == 0, done.stderr
    results = sorted(load(out)["results"], key=lambda r: r["index"])
    cached = [r["cached_tokens"] for r in results]
    assert cached[0] == 0 and cached[1] > 0.9 * results[1]["input_tokens"] and cached[2] == 0


@pytest.mark.integration
def test_a_trace_is_replayed_at_its_own_times_and_lengths(tmp_path, redis_url):
    trace = _mooncake(tmp_path, [(0, 30, 5), (200, 40, 6), (500, 20, 7), (560, 25, 4)])
    out = tmp_path / "r.json"
    done = tokenbench("run", "--mode", "mock", "--trace", str(trace), "--trace-speed", "2", "--concurrency", "4",
                      "--mock-ttft-ms", "5", "--mock-itl-ms", "2", "--redis-url", redis_url, "--output", str(out))
    assert done.returncode == 0, done.stderr
    report = load(out)
    results = sorted(report["results"], key=lambda r: r["index"])
    start = results[0]["scheduled_at"]
    assert [round(r["scheduled_at"] - start, 6) for r in results] == [0.0, 0.1, 0.25, 0.28]
    assert [r["output_tokens"] for r in results] == [5, 6, 7, 4]
    assert (report["arrival"], report["workload"]["source"], report["workload"]["speed"]) == ("trace", "trace", 2.0)
    assert "trace arrivals" in done.stdout and report["dispatch_lag_ms"]["p50"] is not None
    mixed = tokenbench("run", "--mode", "mock", "--trace", str(trace), "--request-rate", "5")
    assert mixed.returncode == 2 and "a trace sets its own send times: drop --request-rate" in mixed.stderr
