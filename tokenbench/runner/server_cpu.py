"""How long a server on this host waited for a CPU during a run (Linux; nothing elsewhere).

A server on the same host shares its cores with the workers. When both want them, the server takes
requests up and streams late, and that wait is in every latency the run reports as the server's:
at C=256 against the mock on 2 cores, the mock waited 0.8-1.9 s for a CPU in a 17 s run with two
worker processes, 0.1 s beside a bare client in one (docs/performance.md).

The server is found from the socket listening on the base URL's port (``/proc/net/tcp`` and
``tcp6``, in this network namespace) when the URL names this host: the processes that hold that
socket, and their descendants (vLLM's engine core is a child of its API server). Their threads'
run-queue time is in ``/proc/PID/task/*/schedstat``. A server in a container of its own (another
network namespace), or one whose processes this user may not look into, is not found: then nothing
is reported.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tokenbench.aggregator.schema import ServerCpuWait

_PROC = Path("/proc")
_LISTEN = "0A"  # the TCP state in /proc/net/tcp
_LOCAL_NAMES = {"localhost", "localhost.localdomain"}


def names_this_host(hostname: str) -> bool:
    """Whether a URL's host is this machine: a loopback or unspecified address, localhost, or this
    host's name (no name is looked up: a lookup could hang)."""
    hostname = hostname.lower().strip("[]")
    try:
        address = ipaddress.ip_address(hostname)
    except ValueError:
        return hostname in _LOCAL_NAMES or hostname == socket.gethostname().lower()
    return address.is_loopback or address.is_unspecified


def url_port(base_url: str) -> int | None:
    parts = urlsplit(base_url)
    try:
        return parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None


def listening_inodes(table: str, port: int) -> set[str]:
    """The inodes of the sockets listening on ``port`` in a /proc/net/tcp(6) table."""
    inodes = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 9 and fields[3] == _LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
            inodes.add(fields[9])
    return inodes


def _pids() -> list[int]:
    return [int(entry.name) for entry in _PROC.iterdir() if entry.name.isdigit()]


def socket_holders(inodes: set[str]) -> set[int]:
    """The processes with one of the sockets ``inodes`` open (those this user may look into)."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    holders = set()
    for pid in _pids():
        try:
            for fd in (_PROC / str(pid) / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    holders.add(pid)
                    break
        except OSError:  # gone, or not ours to look into
            continue
    return holders


def with_descendants(roots: set[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid in _pids():
        try:
            parent = int((_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return found


def cpu_wait_ns(pids: set[int]) -> dict[int, int]:
    """Each process's threads' time spent ready to run but waiting for a CPU, summed, in ns."""
    waits = {}
    for pid in pids:
        try:
            waits[pid] = sum(int((task / "schedstat").read_text().split()[1])
                             for task in (_PROC / str(pid) / "task").iterdir())
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
    return waits


def server_processes(base_url: str) -> set[int]:
    """The processes of the server at ``base_url`` when it runs on this host, else none."""
    port = url_port(base_url)
    hostname = urlsplit(base_url).hostname or ""
    if port is None or not names_this_host(hostname):
        return set()
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            inodes |= listening_inodes((_PROC / "net" / table).read_text(), port)
        except OSError:
            continue
    if not inodes:
        return set()
    return with_descendants(socket_holders(inodes))


def command_names(pids: set[int]) -> list[str]:
    """The processes' command names (``/proc/PID/comm``), each once: what a user checks the watch by
    (a container's published port is held by ``docker-proxy``, not by the server inside)."""
    names = set()
    for pid in pids:
        try:
            names.add((_PROC / str(pid) / "comm").read_text().strip())
        except OSError:
            continue
    return sorted(names)


@dataclass(frozen=True)
class ServerCpuWatch:
    """Started before a run's requests go out; ``finish()`` says how long the server waited meanwhile."""

    pids: frozenset[int]
    commands: list[str]
    waits_at_start: dict[int, int]
    started: float

    @classmethod
    def start(cls, base_url: str) -> ServerCpuWatch:
        pids = server_processes(base_url)
        return cls(frozenset(pids), command_names(pids), cpu_wait_ns(pids), time.monotonic())

    def finish(self) -> ServerCpuWait | None:
        """The server's processes and their commands, the seconds their threads waited for a CPU
        since the start, and that per second of the run; None without a server found here."""
        if not self.pids:
            return None
        elapsed = time.monotonic() - self.started
        waits = cpu_wait_ns(set(self.pids))
        waited_ns = sum(wait - self.waits_at_start.get(pid, 0) for pid, wait in waits.items())
        return {"pids": sorted(self.pids), "commands": self.commands, "wait_s": round(waited_ns / 1e9, 3),
                "wait_ms_per_s": round(waited_ns / 1e6 / elapsed, 1) if elapsed > 0 else None}
