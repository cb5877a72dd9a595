"""Shared fixtures: a real redis-server, aiohttp servers in a thread, the recorded transcripts."""

from __future__ import annotations

import asyncio
import functools
import os
import random
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from aiohttp import web

from tokenbench.mock.server import MockServer, MockSettings
from tokenbench.runner.embedded_redis import find_redis_server

# Copies of the provider transcripts in the project's shared/wire (see the README there).
WIRE_DIR = Path(__file__).resolve().parent / "fixtures" / "wire"


def wire_file(name: str) -> Path:
    return WIRE_DIR / name


_PORTS_GIVEN: set[int] = set()


@functools.cache
def _ports_outside_the_ephemeral_range() -> list[int]:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    ports = [port for port in range(10000, 65536) if not low <= port <= high]
    # Each of pytest-xdist's test processes draws from its own share: two cannot pick the same port
    # between one's check and its server's bind.
    worker, workers = os.environ.get("PYTEST_XDIST_WORKER", "gw0"), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")
    return ports[int(worker.removeprefix("gw"))::int(workers)]


def free_port() -> int:
    """A loopback port that nothing listens on, outside the kernel's ephemeral range and not given before
    in this session: neither a server bound to port 0 nor an outgoing connection can take it before the
    caller's server binds it (or binds it again after a restart), nor can a later caller get it too."""
    candidates = _ports_outside_the_ephemeral_range()
    for _attempt in range(1000):
        port = random.choice(candidates)
        if port in _PORTS_GIVEN:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PORTS_GIVEN.add(port)
        return port
    raise RuntimeError("no free loopback port outside the ephemeral range")


@pytest.fixture
def short_tmp_path() -> Iterator[Path]:
    """A temporary directory with a short path, for a run's TMPDIR: the embedded Redis's unix socket
    must fit in 107 bytes, and pytest's own directories (deeper under pytest-xdist) can leave too few."""
    with tempfile.TemporaryDirectory(prefix="tb-", dir="/tmp") as short:
        yield Path(short)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[str]:
    """A real redis-server (or the bundled valkey-server) on a free loopback port for the whole
    session; yields its URL."""
    binary = find_redis_server()
    if binary is None:
        pytest.fail("no redis-server is installed (.ci/run installs it)")
    workdir = tmp_path_factory.mktemp("redis")
    for _attempt in range(5):
        port = free_port()
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and process.poll() is None:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        if process.poll() is None:
            break
    else:
        pytest.fail("could not start redis-server")
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=5)


@pytest.fixture
def redis_url(redis_server) -> str:
    """The session's real Redis, emptied for this test."""
    redis.Redis.from_url(redis_server).flushall()
    return redis_server


@contextmanager
def serve_app(app: web.Application) -> Iterator[str]:
    """Serve an aiohttp app on a free loopback port in a background thread; yield its base URL."""
    loop = asyncio.new_event_loop()
    # A handler still running at the end (a hanging fault) is cancelled after a second, not aiohttp's 60.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    ready = threading.Event()
    box: dict[str, object] = {}

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        box["port"] = site._server.sockets[0].getsockname()[1]
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    assert ready.wait(10), "test server did not start"
    try:
        yield f"http://127.0.0.1:{box['port']}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.fixture
def mock_server() -> Callable[..., object]:
    """Factory: ``with mock_server(ttft_ms=.., itl_ms=..) as url`` serves the real mock app."""

    def start(**settings):
        return serve_app(MockServer(MockSettings(**settings)).app())

    return start
