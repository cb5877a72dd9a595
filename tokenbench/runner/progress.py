"""A progress line on stderr: requests done of total, failures, live output tokens/s."""

from __future__ import annotations

import time
from collections import deque
from typing import TextIO

import redis

from tokenbench.shared import keys

RATE_WINDOW_S = 5.0  # live tokens/s is measured over this trailing window
PLAIN_INTERVAL_S = 5.0  # how often a non-terminal stream gets a new line


class Progress:
    def __init__(self, connection: redis.Redis, run_id: str, total: int, stream: TextIO) -> None:
        self.connection = connection
        self.run_id = run_id
        self.total = total
        self.stream = stream
        self.interactive = stream.isatty()
        self.started = time.monotonic()
        self._samples: deque[tuple[float, int]] = deque()
        self._last_plain = 0.0

    def update(self) -> None:
        try:
            counters = self.connection.hgetall(keys.run_progress(self.run_id))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._show(f"[{time.monotonic() - self.started:6.1f}s] Redis unreachable ({exc}); still waiting", False)
            return
        done = int(counters.get(b"done", 0))
        failed = int(counters.get(b"failed", 0))
        tokens = int(counters.get(b"output_tokens", 0))
        now = time.monotonic()
        self._samples.append((now, tokens))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW_S:
            self._samples.popleft()
        first_t, first_tokens = self._samples[0]
        rate = (tokens - first_tokens) / (now - first_t) if now > first_t else 0.0
        line = (
            f"[{now - self.started:6.1f}s] {done}/{self.total} done, {failed} failed, "
            f"{rate:,.0f} tok/s"
        )
        self._show(line, done >= self.total)

    def _show(self, line: str, last: bool) -> None:
        now = time.monotonic()
        if self.interactive:
            self.stream.write("\r\x1b[2K" + line)
            self.stream.flush()
        elif now - self._last_plain >= PLAIN_INTERVAL_S or last:
            self._last_plain = now
            self.stream.write(line + "\n")
            self.stream.flush()

    def finish(self) -> None:
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()
