"""Bad input: one line on stderr naming the problem, a non-zero exit (2 for usage), no traceback."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.helpers import tokenbench, tokenbench_in_process
from tokenbench.runner.embedded_redis import find_redis_server


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tokenbench: error: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize(
    "args, needles",
    [
        (["run", "--mode", "bogus"], ["--mode", "bogus"]),
        (["run", "--mode", "mock", "--concurrency", "0"], ["--concurrency"]),
        (["run", "--mode", "mock", "--prompts", "0"], ["--prompts"]),
        (["run", "--mode", "mock", "--max-tokens", "-3"], ["--max-tokens"]),
        (["run", "--mode", "openrouter"], ["API key", "OPENROUTER_API_KEY"]),
        (["run", "--mode", "openai", "--model", "m"], ["--base-url"]),
        (["run", "--mode", "openai", "--base-url", "ftp://x/v1", "--model", "m"], ["--base-url", "ftp://x/v1"]),
        (["run", "--mode", "openai", "--base-url", "http://host:99999/v1", "--model", "m"], ["--base-url"]),
        (["enqueue", "--mode", "mock"], ["mock-server"]),
        (["worker", "-n", "0"], ["-n"]),
        (["report"], ["RUN_ID"]),
        (["run", "--no-such-flag"], ["--no-such-flag"]),
        (["run", "--mode", "mock", "--slo", "ttft=fast"], ["--slo", "'fast' is not a number"]),
        (["run", "--mode", "mock", "--slo", "latency=5"], ["--slo", "unknown metric 'latency'"]),
        (["report", "r", "--slo", "ttft"], ["--slo", "METRIC=MS"]),
        (["run", "--mode", "mock", "--extra-body", "{nope"], ["--extra-body", "not JSON"]),
        (["run", "--mode", "mock", "--extra-body", "[1, 2]"], ["--extra-body", "JSON object"]),
        (["enqueue", "--mode", "openai", "--base-url", "http://h/v1", "--model", "m", "--header", "X"],
         ["--header", "NAME:VALUE"]),
        (["run", "--mode", "mock", "--ttft-timeout", "0"], ["--ttft-timeout"]),
        (["run", "--mode", "mock", "--header", "Authorization: Bearer sk-1"], ["travel through Redis", "Bearer KEY"]),
        (["run", "--mode", "mock", "--header", "api-key: sk-1"], ["--api-key-header api-key"]),
        (["run", "--mode", "mock", "--mock-fault", "explode"], ["--mock-fault", "explode"]),
        (["cancel"], ["RUN_ID"]),
        (["compare", "a.json"], ["at least two result files"]),
        (["compare", "/nonexistent/a.json", "/nonexistent/b.json"], ["cannot read /nonexistent/a.json"]),
        (["run", "--mode", "mock", "--warmup", "-1"], ["--warmup"]),
        (["run", "--mode", "mock", "--request-rate", "nan"], ["--request-rate", "not a number"]),
        (["run", "--mode", "mock", "--request-rate", "1e-300"], ["--request-rate", "0.001"]),
        (["run", "--mode", "mock", "--request-rate", "2", "--burstiness", "inf"], ["--burstiness", "finite"]),
        (["run", "--mode", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--mock-itl-ms", "3",
          "--mock-option", "reasoning=think"], ["--mock-itl-ms, --mock-option", "only for the built-in mock"]),
        (["run", "--mode", "mock", "--processes", "0"], ["--processes"]),
        (["worker", "--streams", "0"], ["--streams"]),
        *[(["run", "--mode", "mock", "--header", f"{name}: v"], ["travel through Redis"])
          for name in ("api_key", "X-Auth", "Ocp-Apim-Subscription-Key", "X-Access-Key", "x-goog-api-key")],
        (["run", "--mode", "openai", "--base-url", "http://user:sk-secret@h/v1", "--model", "m"],
         ["--base-url", "credentials in the URL"]),
        (["run", "--goodput", "ttft:500"], ["no such option --goodput: goodput objectives are --slo"]),
        (["run", "--save-result"], ["no such option --save-result: results are saved by default", "--output FILE"]),
        (["sweep", "--result-dir", "x"], ["no such option --result-dir: --output FILE"]),
        (["run", "--percentile-metrics", "ttft"], ["p50/p90/p95/p99 of TTFT, TPOT, ITL and E2EL"]),
        (["report", "r", "--metric-percentiles", "99"], ["p50/p90/p95/p99"]),
        (["run", "--num-prompts", "5"], ["use --prompts N"]),
        (["run", "--max-concurrency", "5"], ["use --concurrency N"]),
        (["run", "--mode", "mock", "--output", "/nonexistent/r.json"], ["--output", "/nonexistent does not exist"]),
        (["run", "--mode", "mock", "--output", "r.json", "--no-save", "--max-error-rate", "2"], ["--max-error-rate"]),
        (["run", "--mode", "mock", "--max-tokens-param", "max_output"], ["--max-tokens-param", "max_output"]),
        # Found by tests/test_bad_inputs.py: a NaN spread was a traceback, a huge count a run that never starts.
        (["run", "--mode", "mock", "--input-tokens", "100", "--input-tokens-stddev", "nan"], ["not a finite number"]),
        (["run", "--mode", "mock", "--prompts", "9" * 40], ["--prompts", "1000000"]),
        (["run", "--mode", "mock", "--input-tokens", "99999999"], ["--input-tokens", "2000000"]),
        (["run", "--mode", "mock", "--mock-ttft-ms", "nan"], ["--mock-ttft-ms", "not a finite number"]),
    ],
)
def test_usage_errors(args, needles, monkeypatch):
    for name in [name for name in os.environ if name.endswith("API_KEY") or name == "REDIS_URL"]:
        monkeypatch.delenv(name)
    assert_one_line_error(tokenbench_in_process(*args), 2, *needles)


def test_a_usage_error_is_the_same_from_the_console_script():
    """The in-process cases above run the same entry point the installed command does."""
    assert_one_line_error(tokenbench("run", "--mode", "mock", "--concurrency", "0"), 2, "--concurrency")


BAD_PROMPT_FILES = {
    "missing.jsonl": (None, "cannot read", "No such file"),
    "broken.jsonl": ('{"prompt": "ok"}\n{"prompt": \n', "broken.jsonl:2: not JSON"),
    "list.jsonl": ("[1]\n", "list.jsonl:1: expected a JSON object"),
    "noprompt.jsonl": ('{"prompt": "ok"}\n\n{"text": "x"}\n', 'noprompt.jsonl:3: needs "prompt"'),
    "messages.jsonl": ('{"messages": [{"role": "user"}]}\n', 'messages.jsonl:1: messages[0] needs a "role"'),
    "tokens.jsonl": ('{"prompt": "a", "max_tokens": 0}\n', "tokens.jsonl:1: max_tokens must be"),
    "columns.csv": ("id,text\n1,hello\n", "columns.csv:1: no 'prompt' column (columns: id, text)"),
    "tokens.csv": ("prompt,max_tokens\nhi,many\n", "tokens.csv:2: max_tokens 'many'"),
    "empty.txt": ("\n  \n", "empty.txt: no prompts"),
    "latin1.txt": (b"caf\xe9\n", "latin1.txt: not UTF-8"),
}


@pytest.mark.parametrize("name", sorted(BAD_PROMPT_FILES))
def test_bad_prompt_files_name_the_file_and_line(name, tmp_path):
    content, *needles = BAD_PROMPT_FILES[name]
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    enqueue = ["enqueue", "--mode", "openai", "--base-url", "http://h/v1", "--model", "m"]
    for command in (["run", "--mode", "mock"], enqueue):
        assert_one_line_error(tokenbench(*command, "--prompts-file", str(path)), 2, "--prompts-file", *needles)


def test_unreachable_redis_fails_fast_with_one_line():
    url = f"redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    result = tokenbench("report", "some-run", "--redis-url", url)
    assert time.monotonic() - started < 5
    assert_one_line_error(result, 1, "cannot reach Redis", url)


def test_a_prompts_file_that_is_a_directory_is_a_usage_error(tmp_path: Path):
    assert_one_line_error(tokenbench("run", "--mode", "mock", "--prompts-file", str(tmp_path)), 2, "directory")


def test_redis_password_is_not_echoed():
    result = tokenbench("report", "x", "--redis-url", f"redis://user:hunter2@127.0.0.1:{free_port()}/0")
    assert_one_line_error(result, 1, "***")
    assert "hunter2" not in result.stderr


def test_unknown_run_id(redis_url):
    assert_one_line_error(tokenbench("report", "no-such-run", "--redis-url", redis_url), 1, "unknown run id")


def test_help_and_version_exit_zero():
    assert tokenbench("--help").returncode == 0
    version = tokenbench("--version")
    assert version.returncode == 0 and "tokenbench" in version.stdout


def test_prompts_lists_the_builtin_set():
    result = tokenbench("prompts")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 30
    assert lines[0].split()[:2] == ["fact-01", "simple_factual"]


@pytest.mark.parametrize("error, code, line", [
    ("redis", 1, "tokenbench: error: Redis: Connection reset by peer"),
    ("other", None, None),
])
def test_redis_errors_after_connecting_are_one_line_and_others_are_not_swallowed(error, code, line, monkeypatch,
                                                                                 capsys):
    import redis

    from tokenbench import cli as cli_module

    def fails(**_kwargs):
        raise redis.ConnectionError("Connection reset by peer") if error == "redis" else KeyError("bug")

    monkeypatch.setattr(cli_module.cli, "main", fails)
    if error == "redis":
        with pytest.raises(SystemExit) as exited:
            cli_module.main()
        assert exited.value.code == code and capsys.readouterr().err.strip() == line
    else:
        with pytest.raises(KeyError):  # a bug stays a traceback, not a misleading "Redis:" line
            cli_module.main()


def test_terminal_safe_drops_what_a_terminal_would_act_on():
    from tokenbench.shared.terminal import terminal_safe

    assert terminal_safe("a\x1b]0;owned\x07b\x1b[31mc\r\n\td\u202ee\x9bf") == "a]0;ownedb[31mc\n\tdef"
    assert terminal_safe("plain text, é, 日本") == "plain text, é, 日本"


@pytest.mark.integration
def test_escape_codes_in_a_servers_error_never_reach_the_terminal(redis_url, tmp_path):
    from aiohttp import web

    from tests.conftest import serve_app

    async def handler(request):
        return web.json_response({"error": {"message": "\x1b]0;owned\x07\x1b[2J\x1b[31mboom"}}, status=500)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    with serve_app(app) as url:
        result = tokenbench("run", "--mode", "openai", "--base-url", url + "/v1", "--model", "m", "--prompts", "2",
                            "--redis-url", redis_url, "--output", str(tmp_path / "r.json"))
    assert result.returncode == 1
    assert "boom" in result.stdout and "\x1b" not in result.stdout + result.stderr
    assert "\x1b" in (tmp_path / "r.json").read_text(encoding="utf-8").encode().decode("unicode_escape")


@pytest.mark.integration
def test_a_redis_that_accepts_but_never_answers_fails_within_its_timeout():
    import socket

    silent = socket.create_server(("127.0.0.1", 0))
    try:
        started = time.monotonic()
        result = tokenbench("report", "r", "--redis-url", f"redis://127.0.0.1:{silent.getsockname()[1]}/0",
                            timeout=60)
        took = time.monotonic() - started
    finally:
        silent.close()
    assert_one_line_error(result, 1, "cannot reach Redis")
    assert took < 20  # the documented 5 s, and the start of a Python process, with room for a busy machine


@pytest.mark.integration
def test_a_worker_pointed_at_a_read_only_replica_says_so_in_one_line(redis_server):
    import subprocess

    import redis

    primary_port = redis_server.rsplit(":", 1)[1].split("/")[0]
    port = free_port()
    replica = subprocess.Popen([find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--replicaof", "127.0.0.1", primary_port],
                               stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=port).info("replication")["role"] == "slave":
                    break
            except redis.ConnectionError:
                time.sleep(0.05)
        result = tokenbench("worker", "--burst", "--redis-url", f"redis://127.0.0.1:{port}/0")
    finally:
        replica.terminate()
        replica.wait(10)
    assert_one_line_error(result, 1, "read-only replica")
