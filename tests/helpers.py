"""Helpers for tests that drive real processes: the CLI, the mock server, /proc scans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import redis

from tokenbench.shared import keys


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("API_KEY") and k != "REDIS_URL"}
    env.update(extra)
    return env


def tokenbench(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tokenbench", *args], capture_output=True, text=True,
                          timeout=timeout, env=env or clean_env())


def tokenbench_in_process(*args: str) -> subprocess.CompletedProcess:
    """The console entry point (``cli.main``) in this process, for what must fail before anything
    starts (usage errors): no interpreter start-up per case. Callers clear API keys and REDIS_URL
    from the environment first, as ``clean_env`` does for a subprocess."""
    import contextlib
    import io

    from tokenbench.cli import main

    out, err, code = io.StringIO(), io.StringIO(), 0
    argv = sys.argv
    sys.argv = ["tokenbench", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


@contextmanager
def mock_server_process(*args: str) -> Iterator[str]:
    """`tokenbench mock-server` in a process of its own on a free port; yields its base URL."""
    with subprocess.Popen([sys.executable, "-m", "tokenbench", "mock-server", "--port", "0", *args],
                          stdout=subprocess.PIPE, text=True) as mock:  # the with closes its pipe
        try:
            assert mock.stdout is not None
            yield mock.stdout.readline().split("listening on ")[1].strip()
        finally:
            mock.terminate()
            mock.wait(10)


def load(path: Path) -> dict:
    return orjson.loads(path.read_bytes())


def processes_with_marker(marker: str) -> list[int]:
    """Pids of live processes whose environment carries the marker (all that a run started)."""
    found = []
    needle = f"TOKENBENCH_TEST_MARKER={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                status = (entry / "status").read_text()
                if "\nState:\tZ" not in status:
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def children_of(pid: int) -> list[int]:
    """Pids of the live children of ``pid`` (a scan of /proc: for processes without our marker, such
    as redis-server, which rewrites its environment)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return found


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def _unix_socket_paths(pid: int) -> list[str]:
    """The paths of the unix sockets that process ``pid`` holds (its fds' inodes in /proc/net/unix)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    paths = []
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[6] in inodes:
            paths.append(fields[7])
    return paths


class EmbeddedRedis:
    """The redis-server that a `tokenbench run` process started: its pid and a client on its unix socket
    (redis-server rewrites its command line and environment, so it is found as a child with a socket)."""

    def __init__(self, run_pid: int, timeout_s: float = 30) -> None:
        found: list[tuple[int, str]] = []

        def started() -> bool:
            for pid in children_of(run_pid):
                try:
                    command = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if b"redis-server" in command or b"valkey-server" in command:
                        found.extend((pid, path) for path in _unix_socket_paths(pid) if path.endswith("redis.sock"))
                except OSError:
                    continue
            return bool(found)

        wait_for(started, "the embedded redis-server listens", timeout_s)
        self.pid, socket_path = found[0]
        self.client = redis.Redis(unix_socket_path=socket_path, socket_timeout=5)

    def run_id(self) -> str | None:
        metas = self.client.keys(keys.run_meta("*"))
        return metas[0].decode().split(":")[2] if metas else None

    def counts(self) -> tuple[int, int]:
        """(records saved, requests in flight) of the run, (0, 0) before its metadata is written."""
        run_id = self.run_id()
        if run_id is None:
            return 0, 0
        return self.client.hlen(keys.run_records(run_id)), self.client.hlen(keys.run_in_flight(run_id))


@contextmanager
def worker_pool(redis_url: str, queue: str, n: int, streams: int = 1, **env: str) -> Iterator[subprocess.Popen]:
    """`tokenbench worker -n N --streams K` on ``queue``; stopped (and its workers with it) on the way out."""
    pool = subprocess.Popen([sys.executable, "-m", "tokenbench", "worker", "-n", str(n), "--streams", str(streams),
                             "--redis-url", redis_url, "--queue", queue, "--log-level", "WARNING"],
                            env=clean_env(**env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    with pool:  # closes its pipe on the way out
        try:
            yield pool
        finally:
            if pool.poll() is None:
                os.killpg(pool.pid, signal.SIGKILL)
            pool.wait(10)


def enqueue(redis_url: str, mock_url: str, queue: str, *flags: str) -> str:
    result = tokenbench("enqueue", "--mode", "openai", "--base-url", mock_url + "/v1", "--model", "m",
                        "--redis-url", redis_url, "--queue", queue, *flags)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]
