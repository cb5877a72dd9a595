"""A progress line on stderr while a run's records come in: requests done of total, failures, requests
in flight and how many of them still wait for the server's headers, live output tokens/s, and for
`report`, the workers listening on the run's queue (with a warning when there are none)."""

from __future__ import annotations

import time
from collections import deque
from typing import TextIO

import redis
from rq import Queue, Worker

from tokenbench.shared import keys
from tokenbench.shared.record_store import sent_count
from tokenbench.shared.redis_conn import epoch_seconds

RATE_WINDOW_S = 5.0  # live tokens/s is measured over this trailing window
PLAIN_INTERVAL_S = 5.0  # how often a non-terminal stream gets a new line
FRESH_WAITS_S = 3.0  # a worker's count of header waits older than this is from a worker gone since
NO_WORKER_WARNING_S = 5.0  # `report`: how long without a worker on the queue before it says so


def header_waits(entries: dict[bytes, bytes], now: float) -> int:
    """The sum of the workers' fresh counts of requests waiting for headers ("N T" values)."""
    total = 0
    for raw in entries.values():
        try:
            count, at = raw.split()
            if now - float(at) <= FRESH_WAITS_S:
                total += max(int(count), 0)
        except ValueError:
            continue  # not ours: whoever can write to Redis could put anything here
    return total


class Progress:
    def __init__(self, connection: redis.Redis, run_id: str, total: int, stream: TextIO,
                 queue: str | None = None, duration_s: float | None = None) -> None:
        self.connection = connection
        self.run_id = run_id
        self.total = total
        self.duration_s = duration_s  # a run with --duration: its prompts are only a cap
        self.stream = stream
        self.queue = queue  # watch the workers on it (`report`; `run` starts its own)
        self.interactive = stream.isatty()
        self.started = time.monotonic()
        self._samples: deque[tuple[float, int]] = deque()
        self._last_plain = 0.0
        self._workers_seen_at = self.started
        self._warned_no_worker = False

    def update(self) -> None:
        try:
            with self.connection.pipeline(transaction=False) as pipe:
                pipe.hgetall(keys.run_progress(self.run_id))
                pipe.hvals(keys.run_in_flight(self.run_id))
                pipe.hgetall(keys.run_header_waits(self.run_id))
                pipe.time()
                counters, marks, waits, redis_time = pipe.execute()
            workers = self._workers()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._show(f"[{time.monotonic() - self.started:6.1f}s] Redis unreachable ({exc}); still waiting", False)
            return
        in_flight = sent_count(marks)  # jobs a worker started ahead are not sent yet
        done = int(counters.get(b"done", 0))
        failed = int(counters.get(b"failed", 0))
        tokens = int(counters.get(b"output_tokens", 0))
        now = time.monotonic()
        self._samples.append((now, tokens))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW_S:
            self._samples.popleft()
        first_t, first_tokens = self._samples[0]
        rate = (tokens - first_tokens) / (now - first_t) if now > first_t else 0.0
        waiting = header_waits(waits, epoch_seconds(redis_time))
        done_of = f"{done}/{self.total} done" if self.duration_s is None else \
            f"{done} done (--duration {self.duration_s:g} s)"
        line = (f"[{now - self.started:6.1f}s] {done_of}, {failed} failed, {in_flight} in flight"
                + (f" ({waiting} waiting for headers)" if waiting else "") + f", {rate:,.0f} tok/s")
        if workers is not None:
            line += f", {workers} worker(s) on queue {self.queue!r}"
        self._show(line, done >= self.total)
        self._warn_without_workers(workers, now, done)

    def _workers(self) -> int | None:
        if self.queue is None:
            return None
        return Worker.count(connection=self.connection, queue=Queue(self.queue, connection=self.connection))

    def _warn_without_workers(self, workers: int | None, now: float, done: int) -> None:
        if workers is None or done >= self.total:
            return
        if workers:
            self._workers_seen_at, self._warned_no_worker = now, False
        elif now - self._workers_seen_at >= NO_WORKER_WARNING_S and not self._warned_no_worker:
            self._warned_no_worker = True
            self._show(f"warning: no worker is listening on queue {self.queue!r}: start one with "
                       f"`tokenbench worker --queue {self.queue}` (and the same --redis-url)", True)

    def _show(self, line: str, last: bool) -> None:
        now = time.monotonic()
        if self.interactive:
            self.stream.write("\r\x1b[2K" + line + ("\n" if line.startswith("warning:") else ""))
            self.stream.flush()
        elif now - self._last_plain >= PLAIN_INTERVAL_S or last:
            self._last_plain = now
            self.stream.write(line + "\n")
            self.stream.flush()

    def finish(self) -> None:
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()
