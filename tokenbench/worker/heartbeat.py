"""A worker process's liveness key: refreshed every second by a daemon thread while the process lives.

When the process dies (SIGKILL, OOM, power), the key expires ``keys.WORKER_ALIVE_TTL_S`` later and
the aggregator treats the requests it held as lost.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from tokenbench.shared import keys

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, connection: redis.Redis, worker: str) -> None:
        self._connection = connection
        self._key = keys.worker_alive(worker)
        self.beat()  # alive before the first job is marked in flight
        threading.Thread(target=self._run, name="tokenbench-heartbeat", daemon=True).start()

    def beat(self) -> None:
        self._connection.set(self._key, 1, ex=keys.WORKER_ALIVE_TTL_S)

    def _run(self) -> None:
        while True:
            time.sleep(keys.HEARTBEAT_INTERVAL_S)
            try:
                self.beat()
            except redis.RedisError as exc:  # Redis away: try again next beat
                log.warning("heartbeat failed: %s", exc)
