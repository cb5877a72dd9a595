"""Bad input: one line on stderr naming the problem, a non-zero exit (2 for usage), no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import free_port


def tokenbench(*args: str, env: dict | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.endswith("API_KEY") and k != "REDIS_URL"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "tokenbench", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


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
    ],
)
def test_usage_errors(args, needles):
    assert_one_line_error(tokenbench(*args), 2, *needles)


def test_unreachable_redis_fails_fast_with_one_line():
    url = f"redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    result = tokenbench("report", "some-run", "--redis-url", url)
    assert time.monotonic() - started < 5
    assert_one_line_error(result, 1, "cannot reach Redis", url)


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
