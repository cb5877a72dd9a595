"""An idle worker's blocking wait for a job ends when the worker stops, and never loses a job doing so."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import pytest
import redis
from redis.asyncio import Redis

from tests.helpers import clean_env, wait_for
from tokenbench.worker.queue_wait import QueueWait

pytestmark = pytest.mark.integration

_LONG_WAIT_S = 60  # far beyond any test's bound: a wait that returns did not time out


def test_a_stop_ends_the_wait_at_once_and_every_wait_after(redis_url):
    async def scenario() -> tuple[bytes | None, bytes | None, list[bytes]]:
        connection = Redis.from_url(redis_url)
        wait = QueueWait(connection)
        try:
            waiting = asyncio.create_task(wait.move("q", "q:taken", _LONG_WAIT_S))
            await asyncio.sleep(0.05)  # it is blocked in Redis (or about to be: stop retries)
            await wait.stop(connection)
            first = await asyncio.wait_for(waiting, _LONG_WAIT_S / 2)
            await connection.rpush("q", "job-1")
            after = await asyncio.wait_for(wait.move("q", "q:taken", _LONG_WAIT_S), _LONG_WAIT_S / 2)
            return first, after, await connection.lrange("q", 0, -1)
        finally:
            await wait.aclose()
            await connection.aclose()

    first, after, queued = asyncio.run(scenario())
    assert (first, after) == (None, None)
    assert queued == [b"job-1"]  # a stopped wait takes nothing


def test_a_job_pushed_as_the_stop_comes_is_either_taken_or_left_queued(redis_url):
    async def one_race(delay_s: float) -> tuple[bytes | None, list[bytes], list[bytes]]:
        connection = Redis.from_url(redis_url)
        pusher = Redis.from_url(redis_url)
        wait = QueueWait(connection)
        try:
            waiting = asyncio.create_task(wait.move("q", "q:taken", _LONG_WAIT_S))
            await asyncio.sleep(delay_s)
            await asyncio.gather(pusher.rpush("q", "job"), wait.stop(connection))
            moved = await asyncio.wait_for(waiting, _LONG_WAIT_S / 2)
            state = await connection.lrange("q", 0, -1), await connection.lrange("q:taken", 0, -1)
            await connection.delete("q", "q:taken")
            return moved, *state
        finally:
            await wait.aclose()
            await connection.aclose()
            await pusher.aclose()

    outcomes = set()
    for attempt in range(40):
        moved, queued, taken = asyncio.run(one_race(attempt % 4 * 0.002))
        if moved is None:
            assert (queued, taken) == ([b"job"], []), attempt
        else:
            assert (moved, queued, taken) == (b"job", [], [b"job"]), attempt
        outcomes.add(moved)
    assert None in outcomes  # the stop won at least sometimes (it usually does)


def test_without_the_right_to_unblock_the_wait_ends_at_its_timeout(redis_url):
    admin = redis.Redis.from_url(redis_url)
    user, password = f"nounblock-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "+@all", "-client|unblock")
    limited_url = redis_url.replace("redis://", f"redis://{user}:{password}@")

    async def scenario() -> bytes | None:
        connection = Redis.from_url(limited_url)
        wait = QueueWait(connection)
        try:
            waiting = asyncio.create_task(wait.move("q", "q:taken", 1))
            await asyncio.sleep(0.05)
            await wait.stop(connection)  # refused by Redis: no error, the wait goes on to its timeout
            return await asyncio.wait_for(waiting, _LONG_WAIT_S)
        finally:
            await wait.aclose()
            await connection.aclose()

    try:
        assert asyncio.run(scenario()) is None
    finally:
        admin.execute_command("ACL", "DELUSER", user)


def test_a_stopped_idle_worker_ends_its_dequeue_wait_in_redis(redis_url):
    """SIGTERM to an idle `tokenbench worker` blocked in its dequeue: it unblocks its own wait (Redis
    counts one CLIENT UNBLOCK, none refused) and exits 0, rather than sleeping the wait out."""
    queue = f"idle-{uuid.uuid4().hex[:8]}"
    connection = redis.Redis.from_url(redis_url)
    connection.config_resetstat()
    worker = subprocess.Popen([sys.executable, "-m", "tokenbench", "worker", "-n", "1", "--streams", "2", "--queue",
                               queue], env=clean_env(REDIS_URL=redis_url), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        wait_for(lambda: any(c.get("cmd") == "blmove" for c in connection.client_list()),
                 "the worker waits in BLMOVE", timeout_s=60)
        worker.terminate()
        _out, stderr = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, stderr
    unblocks = connection.info("commandstats").get("cmdstat_client|unblock", {})
    assert unblocks.get("calls") == 1 and not unblocks.get("rejected_calls") and not unblocks.get("failed_calls")
