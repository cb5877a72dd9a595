"""Helpers for tests that drive real processes: the CLI, the mock server, /proc scans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson


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
