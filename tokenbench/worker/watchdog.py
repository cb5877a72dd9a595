"""Deadlines for a stream that is blocked in a read.

httpx's read timeout restarts with every read, so it cannot express "no first token within T
seconds of sending" (keep-alive comments keep resetting it) or a total limit. The watchdog is one
thread per worker process that shuts the stream's socket down when the current deadline passes;
the blocked read then returns at once and the request fails with the deadline's name.
"""

from __future__ import annotations

import socket
import threading
import time


class StreamWatchdog:
    """Watches one stream at a time (a worker sends one request at a time)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._sock: socket.socket | None = None
        self._deadline_ns: int | None = None
        self._reason: str | None = None
        self.fired: str | None = None  # the reason of the deadline that cut the current stream
        threading.Thread(target=self._run, name="tokenbench-watchdog", daemon=True).start()

    def start(self, sock: socket.socket | None) -> None:
        """Watch a new stream (``sock`` None: nothing can be cut; deadlines are then only checked)."""
        with self._cond:
            self._sock, self._deadline_ns, self._reason, self.fired = sock, None, None, None

    def set_deadline(self, deadline_ns: int, reason: str) -> None:
        """Cut the stream at ``deadline_ns`` (``time.perf_counter_ns``) unless moved again before."""
        with self._cond:
            sooner = self._deadline_ns is None or deadline_ns < self._deadline_ns
            self._deadline_ns, self._reason = deadline_ns, reason
            if sooner:  # a later deadline needs no wake-up: the thread re-reads it when it wakes
                self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._sock, self._deadline_ns = None, None

    def _run(self) -> None:
        with self._cond:
            while True:
                if self._deadline_ns is None:
                    self._cond.wait()
                    continue
                remaining_s = (self._deadline_ns - time.perf_counter_ns()) / 1e9
                if remaining_s > 0:
                    self._cond.wait(remaining_s)
                    continue
                self.fired = self._reason
                self._deadline_ns = None
                if self._sock is not None:
                    try:
                        self._sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass  # already closed: the read has ended anyway
