"""The worker model: processes x streams, how the concurrency is split, how late the event loop
ran, and process lifetimes (a pool's processes, and everything `run` starts, end with their parent)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import orjson
import pytest

from tests.helpers import children_of, clean_env, load, processes_with_marker, tokenbench
from tokenbench.aggregator.loop_lag import summarize_loop_lag
from tokenbench.aggregator.table import format_summary
from tokenbench.runner.embedded_redis import WORKDIR_PREFIX, find_redis_server, remove_stale_workdirs
from tokenbench.worker.loop_lag import LoopLagMonitor
from tokenbench.worker.pool import split_streams


def test_streams_are_split_as_evenly_as_they_go_and_no_process_is_empty():
    assert split_streams(512, 2) == [256, 256]
    assert split_streams(5, 2) == [3, 2]
    assert split_streams(3, 8) == [1, 1, 1]
    assert sum(split_streams(1000, 7)) == 1000 and max(split_streams(1000, 7)) - min(split_streams(1000, 7)) <= 1


def test_loop_lag_is_kept_per_run_while_its_jobs_are_in_flight():
    monitor = LoopLagMonitor()
    monitor.add_sample(3.0)  # no run in flight: counted nowhere
    monitor.job_started("a")
    for lag_ms in (0.05, 0.25, 0.25, 12.0):
        monitor.add_sample(lag_ms)
    monitor.job_started("b")
    monitor.add_sample(1.0)
    monitor.job_ended("a")
    histograms = {run: orjson.loads(raw) for run, raw in monitor.unsaved().items()}
    assert set(histograms) == {"a", "b"}
    assert histograms["a"]["counts"] == {"0": 1, "2": 2, "120": 1, "10": 1} and histograms["a"]["max_ms"] == 12.0
    assert histograms["b"]["counts"] == {"10": 1}
    assert monitor.unsaved() == {}  # nothing new; "a" is forgotten, "b" still in flight
    monitor.add_sample(0.0)
    assert set(monitor.unsaved()) == {"b"}


def test_the_cpu_wait_is_counted_to_each_run_in_flight_beside_its_lag():
    monitor = LoopLagMonitor()
    monitor.add_cpu_wait(5_000_000, 3, 10_000_000)  # no run in flight: counted nowhere
    monitor.job_started("a")
    monitor.add_sample(0.5)
    monitor.add_cpu_wait(2_000_000, 4, 10_000_000)
    monitor.job_started("b")
    monitor.add_sample(0.5)
    monitor.add_cpu_wait(1_500_000, 2, 10_000_000)
    saved = {run: orjson.loads(raw) for run, raw in monitor.unsaved().items()}
    assert saved["a"]["cpu_wait"] == {"wait_ms": 3.5, "turns": 6, "in_flight_ms": 20.0}
    assert saved["b"]["cpu_wait"] == {"wait_ms": 1.5, "turns": 2, "in_flight_ms": 10.0}


_CPU_BOUND_LOOP_BESIDE_A_HOG = """
import asyncio, os, sys, time
import orjson
from tokenbench.worker.loop_lag import LoopLagMonitor

async def main():
    monitor = LoopLagMonitor()
    sampler = asyncio.create_task(monitor.run())
    monitor.job_started("run")
    end = time.monotonic() + 1.5
    while time.monotonic() < end:  # always ready to run: it waits whenever the hog has the CPU
        burst = time.monotonic() + 0.02
        while time.monotonic() < burst:
            pass
        await asyncio.sleep(0)
    monitor.job_ended("run")
    sampler.cancel()
    print(orjson.loads(monitor.unsaved()["run"])["cpu_wait"])

os.sched_setaffinity(0, {int(sys.argv[1])})
asyncio.run(main())
"""


def test_a_loop_that_shares_its_one_cpu_with_a_hog_is_seen_waiting_for_it():
    """Both pinned to one CPU and always runnable: the loop's thread waits while the hog runs, and the
    monitor's schedstat figures say so (a fair scheduler gives each about half)."""
    import ast

    cpu = min(os.sched_getaffinity(0))
    hog = subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"])
    try:
        measured = subprocess.run([sys.executable, "-c", _CPU_BOUND_LOOP_BESIDE_A_HOG, str(cpu)], capture_output=True,
                                  text=True, timeout=60, env=clean_env())
    finally:
        hog.kill()
        hog.wait(10)
    assert measured.returncode == 0, measured.stderr
    wait = ast.literal_eval(measured.stdout.strip())
    assert wait["in_flight_ms"] > 1000 and wait["turns"] > 0
    assert wait["wait_ms"] > 0.2 * wait["in_flight_ms"]


def test_loop_lag_summary_merges_the_workers_and_the_table_warns_past_its_bound():
    from tests.test_reports import meta, record
    from tokenbench.aggregator.report import build_report

    quiet = {"bin_ms": 0.1, "max_ms": 0.4, "counts": {"1": 98, "3": 2}}
    late = {"bin_ms": 0.1, "max_ms": 30.0, "counts": {"2": 90, "199": 10}}
    summary = summarize_loop_lag({"h:1": quiet, "h:2": late})
    assert (summary["p50"], summary["p99"], summary["max"], summary["samples"]) == (0.3, 20.0, 30.0, 200)
    assert summary["p99_by_worker"] == {"h:1": 0.4, "h:2": 20.0}
    assert summarize_loop_lag({}) is None
    not_histograms = {"h:3": {"bin_ms": 0.1, "max_ms": 1.0, "counts": {"-1": 5}}, "h:4": [1, 2],
                      "h:5": {"bin_ms": 0.5, "max_ms": 1.0, "counts": {"1": 5}},  # bins of another width
                      "h:6": {"bin_ms": 0.1, "max_ms": "late", "counts": {"1": 5}}}
    assert summarize_loop_lag({"h:1": quiet, **not_histograms}) == summarize_loop_lag({"h:1": quiet})
    report = build_report(meta(2), [record(0, 0.0, 100), record(1, 0.0, 100)], loop_lag={"h:1": quiet})
    assert "event loops ran late" not in format_summary(report)
    report = build_report(meta(2), [record(0, 0.0, 100), record(1, 0.0, 100)], loop_lag={"h:1": quiet, "h:2": late})
    table = format_summary(report)
    assert "the workers' event loops ran late by up to 20.0 ms (p99)" in table
    assert max(len(line) for line in table.splitlines()) <= 80


def test_the_cpu_wait_summary_merges_the_workers_ignores_what_is_not_numbers_and_warns_past_its_bound():
    from tests.test_reports import meta, record
    from tokenbench.aggregator.loop_lag import summarize_cpu_wait
    from tokenbench.aggregator.report import build_report

    lag = {"bin_ms": 0.1, "max_ms": 0.4, "counts": {"1": 100}}
    quiet = {**lag, "cpu_wait": {"wait_ms": 2.0, "turns": 400, "in_flight_ms": 4000.0}}
    starved = {**lag, "cpu_wait": {"wait_ms": 1200.0, "turns": 100, "in_flight_ms": 4000.0}}
    summary = summarize_cpu_wait({"h:1": quiet, "h:2": starved, "h:3": lag,
                                  "h:4": {**lag, "cpu_wait": {"wait_ms": "1e9", "turns": 1, "in_flight_ms": 1}},
                                  "h:5": {**lag, "cpu_wait": {"wait_ms": -5, "turns": 1, "in_flight_ms": 1}},
                                  "h:6": {**lag, "cpu_wait": ["not", "a", "dict"]}})
    assert summary == {"share": 0.1502, "mean_wait_ms": 2.404, "wait_ms": 1202.0,
                       "share_by_worker": {"h:1": 0.0005, "h:2": 0.3}}
    assert summarize_cpu_wait({"h:3": lag}) is None
    records = [record(0, 0.0, 100), record(1, 0.0, 100)]
    report = build_report(meta(2), records, loop_lag={"h:1": quiet})
    assert report["worker_cpu_wait"]["mean_wait_ms"] == 0.005
    assert "waited" not in format_summary(report)
    table = format_summary(build_report(meta(2), records, loop_lag={"h:1": quiet, "h:2": starved}))
    assert "the workers' loops waited 15% of the time for a CPU" in table
    assert "while ready to run (2.4 ms a turn on average)" in table
    assert max(len(line) for line in table.splitlines()) <= 80


def test_streams_and_concurrency_are_one_or_the_other():
    outcome = tokenbench("worker", "--streams", "2", "--concurrency", "4", "--redis-url", "redis://127.0.0.1:9/0")
    assert outcome.returncode == 2 and "not both" in outcome.stderr and "Traceback" not in outcome.stderr


def _wait_for(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


LONG_MOCK_RUN = ("--mode", "mock", "--processes", "2", "--prompts", "40", "--max-tokens", "100",
                 "--mock-ttft-ms", "10", "--mock-itl-ms", "50", "--no-save")


@pytest.mark.integration
@pytest.mark.parametrize("command", [
    ("run", "--concurrency", "4", *LONG_MOCK_RUN),
    ("sweep", "--concurrency", "4,8", *LONG_MOCK_RUN),
    ("calibrate", "--concurrency", "4", "--requests-per-worker", "20", "--tokens", "100", "--itl-ms", "50"),
])
def test_a_run_s_children_share_its_session_and_all_die_with_it_on_sigkill(command, short_tmp_path):
    """kill -9 of `run`, `sweep` or `calibrate`: its workers, their processes, the mock and the embedded
    Redis are gone within 5 s; while it ran they stayed in its session (a process group of their own,
    not a new session). The embedded Redis's directory it could not remove goes at the next run's start."""
    marker = uuid.uuid4().hex
    run = subprocess.Popen([sys.executable, "-m", "tokenbench", *command],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env=clean_env(TOKENBENCH_TEST_MARKER=marker, TMPDIR=str(short_tmp_path)))
    try:
        # The command, the mock, the worker pool and its processes (redis-server rewrites its environment).
        assert _wait_for(lambda: len(processes_with_marker(marker)) >= 4, 20), processes_with_marker(marker)
        time.sleep(1.0)
        ours = [pid for pid in processes_with_marker(marker) if pid != run.pid]
        assert all(os.getsid(pid) == os.getsid(run.pid) for pid in ours)
        assert all(os.getpgid(pid) != os.getpgid(run.pid) for pid in ours)
        everything = set(ours) | set(children_of(run.pid))
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait(10)

    def all_gone() -> bool:
        alive = []
        for pid in everything:
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    if stat.read().rsplit(")", 1)[1].split()[0] != "Z":
                        alive.append(pid)
            except OSError:
                pass
        return not alive

    assert _wait_for(all_gone, 5), "processes outlived `run`"
    left = list(short_tmp_path.glob(WORKDIR_PREFIX + "*"))
    assert len(left) == 1 and (left[0] / "redis.sock").exists()
    # Once its redis-server has let go of the socket (on a busy machine, a moment after the rest).
    removed: list = []
    assert _wait_for(lambda: bool(removed.extend(remove_stale_workdirs(short_tmp_path)) or removed), 10)
    assert removed == left and not left[0].exists()


_REDIS_GONE_AT_START = """
import ssl, sys
import redis
from tokenbench.worker import clock, pool

async def redis_reset(_connection):
    raise redis.ConnectionError("Error while reading from /tmp/r/redis.sock : (104, 'Connection reset by peer')")

clock.synchronize = redis_reset  # the process's first TIME, as Redis dies under it
pool._serve(sys.argv[1], ["gone-at-start"], ssl.create_default_context(), pool.WorkerSecurity(None, frozenset()),
            True, "WARNING", 1)
"""


def test_a_worker_process_whose_redis_goes_away_as_it_starts_says_so_in_one_line(redis_url):
    """Redis reachable at the connect check, gone at the process's first clock sync (a run's Redis
    killed while a process starts): one line and exit 1, which the pool counts, not a traceback."""
    done = subprocess.run([sys.executable, "-c", _REDIS_GONE_AT_START, redis_url], capture_output=True, text=True,
                          timeout=60, env=clean_env())
    assert done.returncode == 1
    assert done.stderr == ("tokenbench worker: error: Redis went away as the worker process started: Error while "
                           "reading from /tmp/r/redis.sock : (104, 'Connection reset by peer')\n")


@pytest.mark.integration
def test_a_sigkilled_process_loses_none_of_its_streams_and_doubles_none(redis_url, tmp_path):
    """One process holding 3 requests dies: each is rerun once (--max-retries 1), none is lost or doubled."""
    import redis

    from tests.helpers import enqueue, mock_server_process, worker_pool
    from tests.test_faults import wait_in_flight, worker_pid

    connection = redis.Redis.from_url(redis_url)
    out = tmp_path / "r.json"
    with mock_server_process("--ttft-ms", "50", "--itl-ms", "100") as mock_url, \
            worker_pool(redis_url, "kill-streams", 2, streams=3):
        run_id = enqueue(redis_url, mock_url, "kill-streams", "--prompts", "6", "--max-tokens", "20",
                         "--max-retries", "1")
        in_flight = wait_in_flight(connection, run_id, 6)
        victim = in_flight[0].worker
        held = sorted(entry.index for entry in in_flight if entry.worker == victim)
        time.sleep(0.5)
        os.kill(worker_pid(in_flight[0]), signal.SIGKILL)
        report = tokenbench("report", run_id, "--redis-url", redis_url, "--timeout", "40", "--output", str(out))
    assert report.returncode == 0, report.stderr
    result = load(out)
    assert sorted(r["index"] for r in result["results"]) == list(range(6))
    assert result["successful_runs"] == 6 and len(held) == 3
    assert sorted(r["index"] for r in result["results"] if r["attempt"] == 1) == held
    assert all(r["worker"] != victim for r in result["results"])


@pytest.mark.integration
def test_the_redis_password_is_in_no_command_line(tmp_path):
    """`run --redis-url` with a password: its worker processes get the URL by environment, not argv."""

    import redis as redis_py

    from tests.conftest import free_port

    port, password = free_port(), "pw-" + uuid.uuid4().hex
    server = subprocess.Popen([find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--requirepass", password], stdout=subprocess.DEVNULL)
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    try:
        assert _wait_for(lambda: _pings(redis_py, url), 5)
        marker = uuid.uuid4().hex
        run = subprocess.Popen(
            [sys.executable, "-m", "tokenbench", "run", "--mode", "mock", "--concurrency", "2", "--prompts", "6",
             "--max-tokens", "40", "--mock-itl-ms", "20", "--output", str(tmp_path / "r.json")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env=clean_env(TOKENBENCH_TEST_MARKER=marker, REDIS_URL=url))
        command_lines = set()
        while run.poll() is None:
            for pid in processes_with_marker(marker):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                        command_lines.add(cmdline.read().replace(b"\0", b" ").decode())
                except OSError:
                    pass
            time.sleep(0.05)
        _out, stderr = run.communicate()  # read and closed
        assert run.returncode == 0, stderr
        assert any(" worker " in line for line in command_lines), command_lines
        assert not [line for line in command_lines if password in line]
        assert load(tmp_path / "r.json")["successful_runs"] == 6
    finally:
        server.terminate()
        server.wait(10)


def _pings(redis_py, url: str) -> bool:
    try:
        return bool(redis_py.Redis.from_url(url).ping())
    except redis_py.RedisError:
        return False


@pytest.mark.integration
def test_a_tokenbench_folder_in_the_working_directory_does_not_break_a_run(tmp_path):
    """The children run the installed tokenbench, whatever the working directory holds."""
    (tmp_path / "tokenbench").mkdir()
    (tmp_path / "tokenbench" / "__init__.py").write_text("raise ImportError('the wrong tokenbench')\n")
    result = subprocess.run([sys.executable, "-P", "-m", "tokenbench", "run", "--mode", "mock", "--concurrency", "2",
                             "--prompts", "4", "--max-tokens", "8", "--output", str(tmp_path / "r.json")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120, env=clean_env())
    assert result.returncode == 0, result.stderr
    assert load(tmp_path / "r.json")["successful_runs"] == 4


@pytest.mark.integration
def test_a_run_confined_to_one_core_starts_one_worker_process(tmp_path):
    """`taskset -c N tokenbench run` (or a container's cpuset): one process per core it may use, not per
    core of the machine, so that a server kept on the other cores keeps them."""
    out = tmp_path / "r.json"
    core = min(os.sched_getaffinity(0))
    run = subprocess.run([sys.executable, "-m", "tokenbench", "run", "--mode", "mock", "--concurrency", "4",
                          "--prompts", "8", "--max-tokens", "4", "--output", str(out)],
                         capture_output=True, text=True, timeout=120, env=clean_env(),
                         preexec_fn=lambda: os.sched_setaffinity(0, {core}))
    assert run.returncode == 0, run.stderr
    report = load(out)
    assert report["successful_runs"] == 8 and len(report["workers"]) == 1
    assert report["local_cpu"]["cores"] == os.cpu_count()  # its busy share is the whole machine's
    server = report["local_cpu"]["server_cpu_wait"]  # the run's own mock is a server on this host
    assert server is not None and len(server["pids"]) == 1 and server["wait_s"] >= 0
