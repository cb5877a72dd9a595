"""Workers on several hosts: three network namespaces on a bridge stand in for three machines.

"server" runs redis-server (password and TLS) and the mock; "host-a" and "host-b" each run a
worker pool under their own host name and address, and host-b's clock is an hour behind. A run
enqueued and reported on the server must get every record, from both hosts, on one clock.
Needs root (CI runs as root), iproute2, util-linux's unshare and openssl.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import clean_env, load
from tokenbench.worker.clock import SKEW_ENV

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-multi-host"
REDIS_PORT = 6390
MOCK_PORT = 8011


@dataclass
class Network:
    subnet: str  # e.g. 10.231.7 (a /24)
    namespaces: dict[str, str]  # host name -> namespace

    def address(self, host: str) -> str:
        return f"{self.subnet}.{list(self.namespaces).index(host) + 1}"

    def command(self, host: str, *args: str) -> list[str]:
        """``args`` run in ``host``'s namespace, under its own host name (a UTS namespace of its own)."""
        script = 'hostname "$0" && exec "$@"'
        return ["ip", "netns", "exec", self.namespaces[host], "unshare", "--uts", "sh", "-c", script, host, *args]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    for tool in ("ip", "unshare", "openssl", "redis-server"):
        assert shutil.which(tool), f"{tool} is needed (see .ci/run)"
    assert os.geteuid() == 0, "network namespaces need root (CI runs as root)"
    tag = f"{os.getpid() % 100000}"
    bridge = f"tbbr{tag}"
    net = Network(subnet=f"10.231.{os.getpid() % 250}",
                  namespaces={host: f"tb-{host}-{tag}" for host in ("server", "host-a", "host-b")})
    _ip("link", "add", bridge, "type", "bridge")
    try:
        _ip("link", "set", bridge, "up")
        for index, (host, namespace) in enumerate(net.namespaces.items()):
            outside, inside = f"tbv{index}h{tag}", f"tbv{index}n{tag}"
            _ip("netns", "add", namespace)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", namespace)
            _ip("link", "set", outside, "master", bridge, "up")
            _ip("-n", namespace, "addr", "add", f"{net.address(host)}/24", "dev", inside)
            _ip("-n", namespace, "link", "set", inside, "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
        yield net
    finally:
        for namespace in net.namespaces.values():
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, timeout=10)


def _certificate(directory: Path, address: str) -> Path:
    """A self-signed certificate for ``address``: Redis's TLS identity and the workers' CA."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(directory / "key.pem"), "-out", str(directory / "cert.pem"),
                    "-subj", f"/CN={address}", "-addext", f"subjectAltName=IP:{address}"],
                   check=True, capture_output=True, timeout=60)
    return directory / "cert.pem"


def _wait_until(net: Network, host: str, probe: str, timeout_s: float, failure: str, **env: str) -> None:
    """Until the Python ``probe`` exits 0 on ``host``, tried every 0.2 s; fails with ``failure`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while subprocess.run(net.command(host, sys.executable, "-c", probe), capture_output=True, env=clean_env(**env),
                         timeout=30).returncode != 0:
        assert time.monotonic() < deadline, failure
        time.sleep(0.2)


def _wait_for_port(net: Network, host: str, port: int, timeout_s: float = 15) -> None:
    probe = f"import socket; socket.create_connection(('{net.address(host)}', {port}), 1).close()"
    _wait_until(net, host, probe, timeout_s, f"nothing listens on {net.address(host)}:{port}")


def _wait_for_workers(net: Network, redis_url: str, queue: str, count: int, timeout_s: float = 60) -> None:
    """Until ``count`` RQ workers listen on ``queue``: on a busy machine one host's pool could take
    every job before the other's has started, and the run would not be served by both."""
    probe = ("import os, redis, sys; from rq import Queue, Worker; "
             "connection = redis.Redis.from_url(os.environ['PROBE_REDIS_URL']); "
             f"sys.exit(Worker.count(connection=connection, queue=Queue({queue!r}, connection=connection)) < {count})")
    _wait_until(net, "server", probe, timeout_s, f"fewer than {count} workers listen on {queue}",
                PROBE_REDIS_URL=redis_url)


def test_workers_on_two_hosts_one_skewed_serve_one_run(network, tmp_path):
    server = network.address("server")
    cert = _certificate(tmp_path, server)
    redis_url = f"rediss://:{PASSWORD}@{server}:{REDIS_PORT}/0?ssl_ca_certs={cert}"
    mock_url = f"http://{server}:{MOCK_PORT}/v1"
    processes: list[subprocess.Popen] = []

    def start(host: str, *args: str, **env: str) -> None:
        processes.append(subprocess.Popen(network.command(host, *args), env=clean_env(**env),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))

    def tokenbench_on(host: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(network.command(host, sys.executable, "-m", "tokenbench", *args),
                              env=clean_env(), capture_output=True, text=True, timeout=120)

    try:
        start("server", "redis-server", "--port", "0", "--tls-port", str(REDIS_PORT), "--bind", server,
              "--tls-cert-file", str(cert), "--tls-key-file", str(tmp_path / "key.pem"),
              "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no", "--requirepass", PASSWORD,
              "--save", "", "--appendonly", "no")
        start("server", sys.executable, "-m", "tokenbench", "mock-server", "--host", server, "--port", str(MOCK_PORT),
              "--ttft-ms", "20", "--itl-ms", "5")
        _wait_for_port(network, "server", REDIS_PORT)
        _wait_for_port(network, "server", MOCK_PORT)
        worker = [sys.executable, "-m", "tokenbench", "worker", "-n", "2", "--redis-url", redis_url,
                  "--queue", "multi", "--log-level", "WARNING"]
        start("host-a", *worker)
        start("host-b", *worker, **{SKEW_ENV: "-3600"})  # this host's clock is an hour behind
        _wait_for_workers(network, redis_url, "multi", 4)

        enqueued = tokenbench_on("server", "enqueue", "--mode", "openai", "--base-url", mock_url, "--model", "m",
                                 "--prompts", "24", "--max-tokens", "8", "--redis-url", redis_url,
                                 "--queue", "multi", "--run-id", "multi-host")
        assert enqueued.returncode == 0, enqueued.stderr
        reported = tokenbench_on("server", "report", "multi-host", "--redis-url", redis_url, "--timeout", "60",
                                 "--output", str(tmp_path / "r.json"))
        assert reported.returncode == 0, reported.stderr + "".join(
            p.stderr.read() for p in processes if p.poll() is not None)
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
            if process.stderr is not None:
                process.stderr.close()

    report = load(tmp_path / "r.json")
    assert report["successful_runs"] == 24 and report["complete"]
    assert sorted({r["index"] for r in report["results"]}) == list(range(24))
    assert report["hosts"] == ["host-a", "host-b"]
    by_host = {host: [r for r in report["results"] if r["host"] == host] for host in report["hosts"]}
    assert all(len(records) >= 4 for records in by_host.values())  # both really served the run
    # host-b's records are on the Redis clock: its offset is measured, and the run lasts ~1 s, not an hour.
    assert all(abs(r["clock_offset_ms"] - 3_600_000) < 1_000 for r in by_host["host-b"])
    assert all(abs(r["clock_offset_ms"]) < 1_000 for r in by_host["host-a"])
    assert report["duration_s"] < 30
    assert PASSWORD not in (tmp_path / "r.json").read_text() and PASSWORD not in reported.stdout + reported.stderr
