"""Runs in a shared Redis (`tokenbench runs`, --ttl) and the docker-compose deployment."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import redis
import yaml

from tests.helpers import enqueue, load, mock_server_process, tokenbench, worker_pool
from tokenbench.cli import cli
from tokenbench.worker.clock import SKEW_ENV

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.integration


def test_runs_lists_each_run_with_its_status_and_keys_follow_ttl(redis_url, tmp_path):
    connection = redis.Redis.from_url(redis_url)
    with mock_server_process("--ttft-ms", "1", "--itl-ms", "1") as mock_url:
        base = ["--mode", "openai", "--base-url", mock_url + "/v1", "--model", "m", "--redis-url", redis_url]
        done = tokenbench("run", *base, "--prompts", "3", "--max-tokens", "2", "--ttl", "120",
                          "--output", str(tmp_path / "r.json"))
        assert done.returncode == 0, done.stderr
        waiting = tokenbench("enqueue", *base, "--prompts", "4", "--queue", "nobody-serves-this", "--run-id", "queued")
        assert waiting.returncode == 0, waiting.stderr
    run_id = next(k.decode().split(":")[2] for k in connection.keys("tokenbench:run:*:records"))
    assert 100 < connection.ttl(f"tokenbench:run:{run_id}:meta") <= 120
    assert 100 < connection.ttl(f"tokenbench:run:{run_id}:records") <= 120
    assert connection.ttl("tokenbench:run:queued:meta") > 7 * 24 * 3600 - 60  # the default: a week
    listed = tokenbench("runs", "--redis-url", redis_url)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:4] == ["run", "id", "mode", "status"]
    assert lines[1].split()[:4] == ["queued", "openai", "waiting", "0/4"]  # newest first
    assert lines[2].split()[:4] == [run_id, "openai", "complete", "3/3"]
    connection.delete("tokenbench:run:queued:meta")  # as when its keys expire
    assert "queued" not in tokenbench("runs", "--redis-url", redis_url).stdout
    assert connection.zscore("tokenbench:runs", "queued") is None


def _check_cli_args(args: list[str]) -> None:
    """Parse ``args`` as the tokenbench CLI would, without running anything."""
    name, *rest = args
    command = cli.get_command(click.Context(cli), name)
    assert command is not None, f"no command {name!r}"
    command.make_context(name, rest)


def test_compose_file_services_and_every_command_they_run_exist():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "mock", "worker", "bench"}
    # `docker compose up --scale worker=8` needs a worker without a fixed name or host port.
    assert "container_name" not in services["worker"] and "ports" not in services["worker"]
    assert services["bench"]["profiles"] == ["bench"]
    for name in ("mock", "worker", "bench"):
        assert services[name]["build"] == "."
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["tokenbench"]' in dockerfile and "pip install" in dockerfile
    _check_cli_args(services["mock"]["command"])
    _check_cli_args(services["worker"]["command"])
    assert services["worker"]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    script = " ".join(services["bench"]["command"]).replace("$$", "$")
    invocations = re.findall(r"tokenbench ([^|&]+)", script)
    assert [i.split()[0] for i in invocations] == ["enqueue", "report"]
    for invocation in invocations:
        _check_cli_args(shlex.split(invocation.replace('"$run_id"', "some-run")))


def test_a_worker_host_with_a_skewed_clock_does_not_skew_the_report(redis_url, tmp_path):
    out = tmp_path / "r.json"
    hour_ms = 3600 * 1000
    with mock_server_process("--ttft-ms", "20", "--itl-ms", "10") as mock_url, \
            worker_pool(redis_url, "skew-test", 2), \
            worker_pool(redis_url, "skew-test", 2, **{SKEW_ENV: "3600"}):  # an hour ahead
        run_id = enqueue(redis_url, mock_url, "skew-test", "--prompts", "16", "--max-tokens", "20")
        report = tokenbench("report", run_id, "--redis-url", redis_url, "--timeout", "60", "--output", str(out))
    assert report.returncode == 0, report.stderr
    result = load(out)
    offsets = sorted(r["clock_offset_ms"] for r in result["results"])
    skewed = [o for o in offsets if abs(o + hour_ms) < 100]
    plain = [o for o in offsets if abs(o) < 100]
    assert skewed and plain and len(skewed) + len(plain) == 16  # both hosts' workers served the run
    assert all(r["clock_rtt_ms"] < 1000 for r in result["results"])
    # On one clock the 16 requests (4 at a time, ~0.2 s each) span about a second, not an hour.
    assert result["duration_s"] < 10
    assert result["mean_concurrency"] <= result["max_concurrency"] <= 4
