"""asyncio Redis connections whose commands hiredis packs, as redis-py's own sync connections do.

redis-py's asyncio connections pack every command word by word in Python: a few microseconds a
word. A worker's batched scripts carry some thirty words a job, so packing was 8% of a busy
worker's CPU (py-spy samples, short requests at C=64 against the mock), spent in the bursts where
many streams end at once. hiredis (a dependency already: redis-py's reply parser) packs the same
bytes in C, about 8x faster: 3% of the samples, with the call around it.
"""

from __future__ import annotations

from collections.abc import Iterable

import hiredis
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError
from redis.typing import EncodableT


def pack(args: tuple[EncodableT, ...]) -> bytes:
    """One command in the Redis protocol; a command name of several words (``"CLIENT UNBLOCK"``)
    is sent as those words, as redis-py sends it."""
    name = args[0].encode() if isinstance(args[0], str) else args[0]
    if isinstance(name, bytes) and b" " in name:
        args = (*name.split(), *args[1:])
    try:
        packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]  # its stub takes a 1-tuple
    except TypeError as exc:  # redis-py's error for a word that is no str, bytes, int or float
        raise DataError(str(exc)) from None
    return packed


class _HiredisPacking:
    def pack_command(self, *args: EncodableT) -> list[bytes]:
        return [pack(args)]

    def pack_commands(self, commands: Iterable[Iterable[EncodableT]]) -> list[bytes]:
        return [b"".join(pack(tuple(command)) for command in commands)]


class HiredisConnection(_HiredisPacking, Connection):
    pass


class HiredisUnixConnection(_HiredisPacking, UnixDomainSocketConnection):
    pass


class HiredisSSLConnection(_HiredisPacking, SSLConnection):
    pass


_PACKED_BY_HIREDIS: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: HiredisConnection,
    UnixDomainSocketConnection: HiredisUnixConnection,
    SSLConnection: HiredisSSLConnection,
}


def packed_by_hiredis(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """The class of ``connection_class``'s connections packed by hiredis (itself if it is none of
    redis-py's three: TCP, Unix socket, TLS)."""
    return _PACKED_BY_HIREDIS.get(connection_class, connection_class)
