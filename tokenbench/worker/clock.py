"""One clock for every worker on every host: the Redis server's.

Each worker process estimates how far its wall clock is from the Redis server's (``TIME``), keeping
the sample with the shortest round trip (NTP's rule: its midpoint is the least uncertain), and
stamps ``started_at`` on the Redis clock. Throughput windows and timelines built from records of
several hosts are then right even when the hosts' clocks differ. Durations within a request use
the monotonic clock and need no correction.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from tokenbench.shared.redis_conn import epoch_seconds

# Test hook: pretend this host's wall clock is off by this many seconds (tests/test_scale_out.py).
SKEW_ENV = "TOKENBENCH_CLOCK_SKEW_S"
SAMPLES = 7


@dataclass(frozen=True)
class ClockOffset:
    offset_s: float  # add to this host's wall clock to get the Redis server's
    rtt_s: float  # round trip of the sample it came from: the offset is good to about half of it


_offset: ClockOffset | None = None


def local_time() -> float:
    """This host's wall clock (epoch seconds), with the test skew if one is set."""
    return time.time() + float(os.environ.get(SKEW_ENV) or 0)


async def estimate_offset(connection: Redis, samples: int = SAMPLES) -> ClockOffset:
    best: ClockOffset | None = None
    for _ in range(samples):
        sent = local_time()
        redis_now = epoch_seconds(await connection.time())
        received = local_time()
        sample = ClockOffset(offset_s=redis_now - (sent + received) / 2, rtt_s=received - sent)
        if best is None or sample.rtt_s < best.rtt_s:
            best = sample
    assert best is not None
    return best


async def synchronize(connection: Redis) -> ClockOffset:
    """Estimate this process's offset to the Redis clock; ``now`` uses it from then on."""
    global _offset
    _offset = await estimate_offset(connection)
    return _offset


def current_offset() -> ClockOffset | None:
    return _offset


def now() -> float:
    """Epoch seconds on the Redis server's clock (this host's until ``synchronize`` has run)."""
    return local_time() + (_offset.offset_s if _offset else 0.0)
