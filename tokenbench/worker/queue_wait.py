"""An idle worker's blocking wait for a job, which its stop ends at once instead of at its timeout."""

from __future__ import annotations

import asyncio
from typing import cast

import redis
from redis.asyncio import Redis

_UNBLOCK_TRIES, _UNBLOCK_RETRY_S = 5, 0.01


class QueueWait:
    """BLMOVE on a connection of its own whose client id is known, so that a stop ends the wait with
    CLIENT UNBLOCK: as if its timeout had passed, atomically in Redis (it either moved a job, and
    the reply carries it, or it moves none). Without the right to unblock (an ACL user without
    CLIENT UNBLOCK) the wait ends at its timeout, as it would anyway."""

    def __init__(self, connection: Redis) -> None:
        self._connection = connection.client()  # one connection of the pool, kept for the waits
        self._client_id: int | None = None
        self._waiting = False
        self._stopped = False

    async def move(self, source: str, destination: str, timeout_s: int) -> bytes | None:
        """LMOVE of ``source``'s first item onto ``destination``, waiting up to ``timeout_s`` for one;
        None at once once stopped."""
        if self._stopped:
            return None
        try:
            self._client_id = await self._connection.client_id()  # each time: a reconnect gives a new id
        except redis.ResponseError:  # an ACL user without CLIENT ID: the wait ends at its timeout
            self._client_id = None
        if self._stopped:  # stopped during that round trip
            return None
        self._waiting = True
        try:
            moved = await self._connection.blmove(source, destination, timeout_s)
            return cast("bytes | None", moved)  # bytes, never str: the client does not decode replies
        finally:
            self._waiting = False

    async def stop(self, other: Redis) -> None:
        """End the wait in progress (through ``other``, a connection not blocked), and those to come."""
        self._stopped = True
        for _ in range(_UNBLOCK_TRIES):
            if not self._waiting or self._client_id is None:
                return
            try:
                if await other.client_unblock(self._client_id):
                    return
            except (redis.ResponseError, redis.ConnectionError, redis.TimeoutError):  # the wait ends at its timeout
                return
            # Not blocked yet: the BLMOVE was sent first but has not been read by Redis.
            await asyncio.sleep(_UNBLOCK_RETRY_S)

    async def aclose(self) -> None:
        """Give the wait's connection back to the pool (before the pool is closed)."""
        await self._connection.aclose()
