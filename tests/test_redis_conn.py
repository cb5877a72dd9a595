"""tokenbench's Redis clients (shared/redis_conn.py) against a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis

from tokenbench.shared.redis_conn import connect, connect_async


def test_the_clients_do_not_ask_for_maintenance_notifications(redis_url):
    """redis-py 7+ asks every RESP3 connection for maintenance notifications (CLIENT MAINT_NOTIFICATIONS),
    which a server before Redis 8 refuses. In a CI run of the long-outage test that request's handling,
    on reconnecting after the restart, killed RQ's pubsub thread (a ResponseError read as the handshake's
    reply) and made the worker's exit raise. tokenbench's sync and asyncio clients do not ask: each
    connection draws only the refusals a RESP2 client's does (which never asks; a server before 7.2 refuses
    its CLIENT SETINFO alike)."""
    admin = redis.Redis.from_url(redis_url, protocol=2)

    def refusals(connect_once: Callable[[], None]) -> int:
        admin.config_resetstat()
        connect_once()
        return int(admin.info("errorstats").get("errorstat_ERR", {}).get("count", 0))

    def plain(protocol: int) -> None:
        client = redis.Redis.from_url(redis_url, protocol=protocol)
        client.ping()
        client.close()

    def sync_client() -> None:
        connect(redis_url, "test").close()

    def async_client() -> None:
        async def ping() -> None:
            client = connect_async(redis_url, "test")
            await client.ping()
            await client.aclose()
        asyncio.run(ping())

    never_asks = refusals(lambda: plain(2))
    assert refusals(lambda: plain(3)) > never_asks  # this server refuses the request (Redis < 8): the test bites
    assert refusals(sync_client) == never_asks
    assert refusals(async_client) == never_asks
    admin.close()
