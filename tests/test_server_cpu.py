"""A server on this host, found from the port it listens on, and how long it waited for a CPU
during a run (runner/server_cpu.py); the table's warning when that wait is long."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tokenbench.aggregator.table import SERVER_CPU_WAIT_WARN_MS_PER_S, format_summary
from tokenbench.runner.server_cpu import (
    ServerCpuWatch,
    cpu_wait_ns,
    listening_inodes,
    names_this_host,
    server_processes,
    url_port,
)

# /proc/net/tcp and tcp6 as Linux writes them: a listener on 8000 (0x1F40), a connection from
# port 8000, a listener on 8001, and IPv6 listeners on 8000 and 80.
TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0 100 0 0 10 0
   1: 0100007F:1F40 0100007F:D2A2 01 00000000:00000000 00:00000000 00000000     0        0 2222 1 0 20 4 30 10 -1
   2: 00000000:1F41 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3333 1 0 100 0 0 10 0
"""
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F40 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0 100 0 0 10 0
   1: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5555 1 0 100 0 0 10 0
"""  # noqa: E501


def test_the_listening_sockets_of_a_port_are_read_from_procs_tables():
    assert listening_inodes(TCP, 8000) == {"1111"}  # not the connection
    assert listening_inodes(TCP, 8001) == {"3333"}
    assert listening_inodes(TCP6, 8000) == {"4444"}
    assert listening_inodes(TCP, 9000) == set()


@pytest.mark.parametrize(("host", "here"), [
    ("127.0.0.1", True), ("127.0.1.1", True), ("localhost", True), ("::1", True), ("[::1]", True),
    ("0.0.0.0", True), (socket.gethostname(), True), ("openrouter.ai", False), ("10.0.0.7", False),
    ("127.example.com", False),
])
def test_only_a_url_naming_this_host_is_looked_for_here(host, here):
    assert names_this_host(host) is here


def test_the_port_is_the_urls_or_its_schemes():
    assert url_port("http://127.0.0.1:8000/v1") == 8000
    assert url_port("https://localhost/v1") == 443
    assert url_port("http://localhost/v1") == 80
    assert url_port("http://localhost:99999/v1") is None


def test_a_server_is_found_with_its_children_and_its_cpu_wait_is_read():
    """A real server process listening on a loopback port (and a child of it, as vLLM's engine
    is of its API server); nothing for a remote host's URL or a port nobody listens on."""
    script = ("import socket, subprocess, sys, time\n"
              "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              "print(s.getsockname()[1], child.pid, flush=True); time.sleep(60)\n")
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as server:
        port, child = (int(word) for word in server.stdout.readline().split())
        try:
            url = f"http://127.0.0.1:{port}/v1"
            assert server_processes(url) == {server.pid, child}
            assert server_processes(f"http://openrouter.ai:{port}/v1") == set()
            finished = ServerCpuWatch.start(url).finish()
            assert finished is not None and finished["pids"] == sorted([server.pid, child])
            assert finished["commands"] == [Path(sys.executable).name[:15]]  # both are Python
            assert finished["wait_s"] >= 0 and finished["wait_ms_per_s"] is not None
        finally:
            os.kill(child, signal.SIGKILL)
            server.kill()
    assert ServerCpuWatch.start(url).finish() is None  # nobody listens there now


def test_a_process_cpu_wait_is_its_threads_run_queue_time():
    assert cpu_wait_ns({os.getpid()})[os.getpid()] >= 0
    assert cpu_wait_ns({2**22 + 1}) == {}  # no such process


def test_a_server_that_waited_long_for_a_cpu_is_named_in_the_table():
    from tests.test_reports import meta, record
    from tokenbench.aggregator.report import build_report

    report = build_report(meta(2), [record(0, 0.0, 100), record(1, 0.0, 100)])
    below = SERVER_CPU_WAIT_WARN_MS_PER_S / 2
    report["local_cpu"] = {"cores": 2, "busy_share": 0.5,
                           "server_cpu_wait": {"pids": [7], "commands": ["python"], "wait_s": 0.4,
                                               "wait_ms_per_s": below}}
    assert "server on this host" not in format_summary(report)
    report["local_cpu"]["server_cpu_wait"] = {"pids": [7, 8], "commands": ["vllm", "VLLM::EngineCor\x1b"],
                                              "wait_s": 1.3, "wait_ms_per_s": 76.5}
    table = format_summary(report)
    assert "the server on this host waited 1.3 s for a CPU during the run" in table
    assert "(76.5 ms a second, its threads summed)" in table
    assert "watched: vllm, VLLM::EngineCor" in table and "\x1b" not in table
    assert max(len(line) for line in table.splitlines()) <= 80
