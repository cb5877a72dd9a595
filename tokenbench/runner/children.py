"""Child processes that `run` starts (the mock server, the worker pool) and how it stops them."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys

from tokenbench.mock import READY_LINE_PREFIX
from tokenbench.shared.errors import TokenbenchError
from tokenbench.shared.lifetime import die_with_parent

STOP_GRACE_S = 5.0
MOCK_START_TIMEOUT_S = 10.0


def start_child(args: list[str], env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    """``python -m tokenbench ARGS`` in its own process group, so that a terminal's Ctrl-C reaches
    only us and we stop the children in order; on Linux it dies with us, even if we are killed.

    A process group, not a session: on a kernel with autogroup scheduling a new session is a new
    scheduling group, and the whole worker pool would then share one group's CPU against the
    server's (run beside a real vLLM, requests waited ~11x longer for a CPU)."""
    return subprocess.Popen(
        # -P: the installed tokenbench, never a `tokenbench/` folder in the working directory.
        [sys.executable, "-P", "-m", "tokenbench", *args],
        stdin=subprocess.DEVNULL,
        env=env,
        process_group=0,
        preexec_fn=die_with_parent,
        **kwargs,
    )


def stop_child(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the child (it stops its own children in order), then SIGKILL its whole process
    group if it is not gone within ``grace_s``."""
    if process.poll() is None:
        try:
            process.terminate()
            process.wait(timeout=grace_s)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    # The group may hold grandchildren (the pool's workers) even when the child itself has gone.
    _signal_group(process, signal.SIGKILL)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    for pipe in (process.stdout, process.stderr):  # the mock's ready line came on stdout
        if pipe is not None:
            pipe.close()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def launch_mock_server(mock_args: list[str]) -> subprocess.Popen:
    """Start ``tokenbench mock-server MOCK_ARGS`` on a free loopback port; ``mock_server_url`` waits for it."""
    args = ["mock-server", "--host", "127.0.0.1", "--port", "0", *mock_args]
    return start_child(args, stdout=subprocess.PIPE, text=True)


def mock_server_url(process: subprocess.Popen, timeout_s: float = MOCK_START_TIMEOUT_S) -> str:
    """The base URL the mock server prints once it listens."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        line = process.stdout.readline() if selector.select(timeout=timeout_s) else ""
    if not line.startswith(READY_LINE_PREFIX):
        raise TokenbenchError(f"the mock server did not start: {line.strip() or 'no output'}")
    return line[len(READY_LINE_PREFIX):].strip()
