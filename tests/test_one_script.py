"""Commands queued on a pipeline, sent as one script to the real Redis: the same effects and replies,
in order, and the pipeline left empty."""

from __future__ import annotations

import asyncio

import redis

from tokenbench.shared.redis_conn import connect_async
from tokenbench.worker.one_script import execute_as_one_script


def test_the_queued_commands_run_in_order_with_their_replies(redis_url):
    async def main() -> tuple[list, int]:
        connection = connect_async(redis_url, "test")
        try:
            async with connection.pipeline(transaction=False) as pipe:
                pipe.exists("marked")
                pipe.hset("job", mapping={"status": "started", "attempt": 2, "score": 1.5, "raw": b"\xff\x00"})
                pipe.expire("job", 60)
                pipe.zadd("started", {"job:1": 1796170686.25})
                pipe.lrem("intermediate", 1, "job:1")
                pipe.hget("job", "status")
                replies = await execute_as_one_script(connection, pipe)
                left = len(pipe)
            return replies, left
        finally:
            await connection.aclose()

    replies, left = asyncio.run(main())
    assert replies == [0, 4, 1, 1, 0, b"started"] and left == 0
    stored = redis.Redis.from_url(redis_url)
    assert stored.hgetall("job") == {b"status": b"started", b"attempt": b"2", b"score": b"1.5", b"raw": b"\xff\x00"}
    assert 0 < stored.ttl("job") <= 60
    assert stored.zscore("started", "job:1") == 1796170686.25


def test_an_empty_pipeline_sends_nothing(redis_url):
    async def main() -> list:
        connection = connect_async(redis_url, "test")
        try:
            async with connection.pipeline(transaction=False) as pipe:
                return await execute_as_one_script(connection, pipe)
        finally:
            await connection.aclose()

    evals = redis.Redis.from_url(redis_url).info("commandstats").get("cmdstat_eval", {}).get("calls", 0)
    assert asyncio.run(main()) == []
    assert redis.Redis.from_url(redis_url).info("commandstats").get("cmdstat_eval", {}).get("calls", 0) == evals
