"""Opening a Redis connection with bounded waits and a clear error when Redis is not there."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from tokenbench.shared.errors import TokenbenchError

if TYPE_CHECKING:
    import redis
    import redis.asyncio

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
REDIS_URL_ENV = "REDIS_URL"
CONNECT_TIMEOUT_S = 5.0
# Every reply is waited for this long at most, so a Redis that accepts but never answers fails in
# 5 s; the workers' blocking dequeue waits 1 s (stream_worker.DEQUEUE_BLOCK_S).
SOCKET_TIMEOUT_S = 5.0
ASYNC_POOL_CONNECTIONS = 16


def default_redis_url() -> str:
    return os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def connect(url: str, role: str) -> redis.Redis:
    """A client for ``url`` that has answered PING, or a TokenbenchError saying why not.

    The connection is named ``tokenbench:ROLE``, so that `redis-cli CLIENT LIST` tells who is who.
    """
    import redis  # here, not at the top: the mock server and `--help` never pay its ~0.2 s import

    try:
        client = redis.Redis.from_url(
            url,
            client_name=f"tokenbench:{role}",
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=SOCKET_TIMEOUT_S,
            health_check_interval=30,
            **_no_maintenance_notifications(),
        )
    except ValueError as exc:
        raise TokenbenchError(f"invalid Redis URL {redact_url(url)!r}: {exc}") from None
    try:
        client.ping()
    except redis.RedisError as exc:
        raise TokenbenchError(f"cannot reach Redis at {redact_url(url)}: {exc}") from None
    return client


def _no_maintenance_notifications() -> dict[str, Any]:
    """redis-py 7+ asks for maintenance notifications (CLIENT MAINT_NOTIFICATIONS, for Redis Cloud's
    hitless upgrades) on every RESP3 connection. A server before Redis 8 refuses it; after a restart
    that refusal was read as the handshake's reply, which killed RQ's pubsub thread and made a
    worker's exit raise. tokenbench needs none of them: the option off, where redis-py has it."""
    try:
        from redis.maint_notifications import MaintNotificationsConfig
    except ImportError:  # redis-py before 7 never asks
        return {}
    return {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}


def epoch_seconds(time_reply: tuple[int, int]) -> float:
    """Redis's ``TIME`` reply (seconds, microseconds) as epoch seconds on the server's clock."""
    seconds, microseconds = time_reply
    return seconds + microseconds / 1e6


def connect_async(url: str, role: str, max_connections: int = ASYNC_POOL_CONNECTIONS) -> redis.asyncio.Redis:
    """An asyncio client for ``url`` with the same bounded waits (for a worker's event loop); it
    connects on first use, after ``connect`` has checked the URL and that Redis answers.

    Its streams share ``max_connections`` connections, waiting for a free one rather than failing:
    a few connections carry hundreds of streams' round trips, pipelined."""
    import redis.asyncio

    from tokenbench.shared.hiredis_packing import packed_by_hiredis

    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=SOCKET_TIMEOUT_S,
        client_name=f"tokenbench:{role}",
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        health_check_interval=30,
        **_no_maintenance_notifications(),
    )
    pool.connection_class = packed_by_hiredis(pool.connection_class)  # before any connection is made
    return redis.asyncio.Redis.from_pool(pool)  # owns the pool: aclose() closes its connections too
