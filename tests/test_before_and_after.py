"""What is checked before a run sends anything (output paths, the pre-flight request), where its
result goes by default, and the one exit rule of run, report and sweep."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from aiohttp import web

from tests.builders import make_report
from tests.conftest import free_port, serve_app
from tests.helpers import clean_env, load, tokenbench
from tokenbench.aggregator.verdict import failure_reason
from tokenbench.cli_outputs import check_writable, write_result_files
from tokenbench.producer.prompts import BUILTIN_PROMPTS
from tokenbench.runner.preflight import preflight
from tokenbench.shared.endpoint import Endpoint
from tokenbench.shared.errors import TokenbenchError
from tokenbench.worker.capacity import too_few_open_files, too_many_streams

QUICK_MOCK = ("--mode", "mock", "--mock-ttft-ms", "5", "--mock-itl-ms", "1", "--max-tokens", "8", "--processes", "1")


def _counting_app(status: int, seen: list[str], body: str = '{"error": {"message": "no"}}') -> web.Application:
    async def answer(request: web.Request) -> web.Response:
        if request.method == "POST":  # requests, not the scrapes of /metrics
            seen.append(request.path)
        return web.Response(status=status, text=body, content_type="application/json")
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


def _endpoint(base_url: str) -> Endpoint:
    return Endpoint(mode="openai", base_url=base_url, model="m")


# --- output paths --------------------------------------------------------------------------------------------

def test_paths_that_cannot_be_written_are_named(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    for path, words in ((tmp_path / "nope" / "r.json", "does not exist"), (tmp_path, "is a directory")):
        with pytest.raises(click.BadParameter, match=words):
            check_writable(path, "--output")
    if os.geteuid() != 0:  # root writes anywhere
        locked.chmod(0o500)
        with pytest.raises(click.BadParameter, match="not writable"):
            check_writable(locked / "r.json", "--output")
    check_writable(tmp_path / "r.json", "--output")


def test_a_write_that_fails_after_the_run_keeps_the_result_in_a_temporary_file(tmp_path):
    gone = tmp_path / "gone" / "r.json"  # its folder vanished during the run
    with pytest.raises(TokenbenchError, match="saved in") as raised:
        write_result_files([(gone, lambda: b'{"kept": true}')])
    spare = Path(str(raised.value).rsplit("saved in ", 1)[1].split(" instead")[0])
    try:
        assert spare.read_bytes() == b'{"kept": true}'
    finally:
        spare.unlink()


@pytest.mark.parametrize("flag", ["--output", "--csv", "--html"])
def test_run_refuses_an_unwritable_path_before_it_starts_anything(flag, tmp_path):
    done = tokenbench("run", *QUICK_MOCK, "--prompts", "2", flag, str(tmp_path / "missing" / "x"))
    assert done.returncode == 2
    assert done.stderr.strip() == f"tokenbench: error: Invalid value for '{flag}': directory " \
                                  f"{tmp_path / 'missing'} does not exist"


@pytest.mark.integration
def test_every_run_is_saved_by_default_unless_no_save(tmp_path):
    saved = subprocess.run([sys.executable, "-m", "tokenbench", "run", *QUICK_MOCK, "--prompts", "2"],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path, env=clean_env())
    assert saved.returncode == 0, saved.stderr
    [result] = (tmp_path / "tokenbench-results").iterdir()
    assert f"wrote tokenbench-results/{result.name}" in saved.stderr
    assert result.name == load(result)["run_id"] + ".json"
    skipped = subprocess.run([sys.executable, "-m", "tokenbench", "run", *QUICK_MOCK, "--prompts", "2", "--no-save"],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path, env=clean_env())
    assert skipped.returncode == 0, skipped.stderr
    assert len(list((tmp_path / "tokenbench-results").iterdir())) == 1
    assert "wrote" not in skipped.stderr


# --- the exit rule -------------------------------------------------------------------------------------------

def test_the_exit_rule():
    assert failure_reason(make_report(10, 9), 0.1) is None
    assert failure_reason(make_report(10, 8), 0.1) == ("2 of 10 requests failed or have no record (20.0%), more "
                                                       "than --max-error-rate 10.0%")
    assert failure_reason(make_report(10, 8), 0.5) is None
    assert failure_reason(make_report(3, 0), 1.0) == "no request of 3 succeeded (see the errors above)"
    assert failure_reason(make_report(0, 0), 0.0) is None


@pytest.mark.integration
def test_run_report_and_sweep_exit_1_above_the_error_rate(redis_url, tmp_path):
    faulty = ("--mock-fault", "http_error", "--mock-fault-rate", "0.5")
    run = tokenbench("run", *QUICK_MOCK, *faulty, "--prompts", "10", "--concurrency", "2", "--redis-url", redis_url,
                     "--output", str(tmp_path / "r.json"))
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1] == ("tokenbench: error: 5 of 10 requests failed or have no record "
                                                   "(50.0%), more than --max-error-rate 10.0%")
    run_id = load(tmp_path / "r.json")["run_id"]
    assert tokenbench("report", run_id, "--redis-url", redis_url, "--no-save").returncode == 1
    assert tokenbench("report", run_id, "--redis-url", redis_url, "--no-save",
                      "--max-error-rate", "0.5").returncode == 0
    sweep = tokenbench("sweep", *QUICK_MOCK, *faulty, "--prompts", "4", "--concurrency", "2", "--no-save",
                       "--redis-url", redis_url)
    assert sweep.returncode == 1
    assert "more than --max-error-rate 10.0%" in sweep.stderr


# --- the pre-flight request ----------------------------------------------------------------------------------

@pytest.mark.parametrize("status, base, hint", [
    (401, "/v1", "check the API key: --api-key or TOKENBENCH_API_KEY or OPENAI_API_KEY"),
    (403, "/v1", "check the API key"),
    (404, "", "did you mean --base-url http://127.0.0.1:{port}/v1?"),
    (404, "/v1", "check --base-url and --model 'm'"),
])
def test_a_failure_the_run_would_repeat_stops_it_with_the_status_url_and_a_hint(status, base, hint):
    seen: list[str] = []
    with serve_app(_counting_app(status, seen)) as url:
        with pytest.raises(TokenbenchError) as raised:
            preflight(_endpoint(url + base), BUILTIN_PROMPTS[0], None)
    port = url.rsplit(":", 1)[1]
    message = str(raised.value)
    assert message.startswith(f"pre-flight request to {url}{base}/chat/completions failed: HTTP {status}")
    assert hint.format(port=port) in message and message.endswith("--no-preflight skips this check")
    assert seen == [f"{base}/chat/completions"]


def test_no_server_at_all_is_named_with_its_address():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(TokenbenchError, match=r"failed: ClientConnectorError.*is a server listening at "
                                              r"http://127\.0\.0\.1:\d+\?"):
        preflight(_endpoint(url), BUILTIN_PROMPTS[0], None)


def test_a_busy_server_is_a_warning_and_an_answer_is_quiet(mock_server):
    with serve_app(_counting_app(429, [])) as url:
        busy = preflight(_endpoint(url + "/v1"), BUILTIN_PROMPTS[0], None)
    assert busy.warning and "HTTP 429" in busy.warning and busy.warning.endswith("going on with the run")
    with mock_server(ttft_ms=1, itl_ms=1) as url:
        fine = preflight(_endpoint(url + "/v1"), BUILTIN_PROMPTS[0], None)
    assert fine.warning is None and fine.record.success and fine.record.output_tokens == 1


@pytest.mark.integration
def test_run_stops_after_one_request_to_a_server_that_refuses_the_key(redis_url):
    seen: list[str] = []
    with serve_app(_counting_app(401, seen)) as url:
        stopped = tokenbench("run", "--mode", "openai", "--base-url", url + "/v1", "--model", "m", "--prompts", "30",
                             "--redis-url", redis_url, "--no-save")
        assert stopped.returncode == 1
        assert "HTTP 401" in stopped.stderr and "check the API key" in stopped.stderr
        assert len(seen) == 1
        unchecked = tokenbench("run", "--mode", "openai", "--base-url", url + "/v1", "--model", "m", "--prompts", "3",
                               "--redis-url", redis_url, "--no-save", "--no-preflight")
    assert unchecked.returncode == 1 and len(seen) == 1 + 3


# --- what this host can hold ---------------------------------------------------------------------------------

def test_the_concurrency_limit_comes_from_the_cores():
    assert too_many_streams(1024, cores=2) is None
    assert too_many_streams(1025, cores=2) == (
        "1025 streams are more than this host can time at a server's pace: about 512 per core, 2 core(s): 1024 "
        "(docs/performance.md). Run `tokenbench worker` on more hosts on the same Redis, or give --force to go on")


def test_a_process_needs_a_socket_per_stream_within_the_open_file_limit():
    assert too_few_open_files(500, hard_limit=1024) is None
    assert too_few_open_files(1000, hard_limit=1024) == (
        "1000 streams in one process need 1064 open files, more than this system allows (1024, `ulimit -Hn`): "
        "spread them over more processes")


def test_the_soft_open_file_limit_is_raised_to_what_the_streams_need():
    script = ("import resource; from tokenbench.worker.capacity import raise_open_file_limit; "
              "resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1])); "
              "raise_open_file_limit(700); print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == "764", done.stderr


def test_more_streams_than_the_host_can_time_are_refused_before_anything_starts():
    cores = os.cpu_count() or 1
    too_many = str(512 * cores + 1)
    for args in (("run", *QUICK_MOCK, "--concurrency", too_many),
                 ("sweep", *QUICK_MOCK, "--concurrency", f"1,{too_many}"),
                 ("worker", "-n", "1", "--streams", too_many)):
        done = tokenbench(*args)
        assert done.returncode == 2
        assert done.stderr.startswith(f"tokenbench: error: {too_many} streams are more than this host can time")
