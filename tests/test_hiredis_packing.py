"""The workers' asyncio Redis connections pack commands with hiredis (shared/hiredis_packing.py):
the same bytes as redis-py's own packer, the same errors, and real round trips."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from tokenbench.shared.hiredis_packing import (
    HiredisConnection,
    HiredisSSLConnection,
    HiredisUnixConnection,
    packed_by_hiredis,
)
from tokenbench.shared.redis_conn import connect_async

_redis_py = Connection()  # redis-py's packer in Python, the reference
_ours = HiredisConnection()

words = st.one_of(st.text(), st.binary(), st.integers(), st.floats(allow_nan=False))


def _python_packed(*args) -> bytes:
    return b"".join(bytes(piece) for piece in _redis_py.pack_command(*args))


@given(st.lists(words, max_size=40))
def test_a_command_is_packed_as_redis_py_packs_it(args):
    assert b"".join(_ours.pack_command("EVAL", *args)) == _python_packed("EVAL", *args)


@given(st.lists(st.lists(words, max_size=8), max_size=6))
def test_a_pipeline_is_packed_as_redis_py_packs_it(commands):
    commands = [("HSET", *command) for command in commands]
    ours = b"".join(_ours.pack_commands(commands))
    assert ours == b"".join(bytes(piece) for piece in _redis_py.pack_commands(commands))


def test_a_command_name_of_two_words_goes_as_two_words():
    words = b"*4\r\n$6\r\nCLIENT\r\n$7\r\nUNBLOCK\r\n$1\r\n7\r\n$5\r\nERROR\r\n"
    assert b"".join(_ours.pack_command("CLIENT UNBLOCK", 7, "ERROR")) == words
    assert _python_packed("CLIENT UNBLOCK", 7, "ERROR") == words


@pytest.mark.parametrize("value", [None, True, object()])
def test_a_word_redis_cannot_take_is_redis_pys_data_error(value):
    with pytest.raises(DataError):
        _redis_py.pack_command("SET", "k", value)
    with pytest.raises(DataError):
        _ours.pack_command("SET", "k", value)


@pytest.mark.parametrize(("url", "packed_class"), [
    ("redis://127.0.0.1:6379/0", HiredisConnection),
    ("unix:///tmp/tokenbench-no-such.sock", HiredisUnixConnection),
    ("rediss://127.0.0.1:6380/0", HiredisSSLConnection),
])
def test_every_kind_of_url_gets_connections_packed_by_hiredis(url, packed_class):
    client = connect_async(url, "test")  # connects on first use: nothing is reached here
    assert client.connection_pool.connection_class is packed_class
    assert packed_by_hiredis(packed_class) is packed_class


def test_round_trips_through_a_real_redis(redis_url):
    """A script with many words, a pipeline, and a command of two words, as a worker sends them."""
    async def talk() -> tuple:
        client = connect_async(redis_url, "test")
        try:
            words = ["é", b"\x00\xff", 12, 1.5, "x" * 10_000]
            echoed = await client.eval("return ARGV", 0, *words)
            async with client.pipeline(transaction=False) as pipe:
                pipe.set("a", 1)
                pipe.incrby("a", 2)
                pipe.get("a")
                piped = await pipe.execute()
            unblocked = await client.client_unblock(999_999)
            return echoed, piped, unblocked
        finally:
            await client.aclose()

    echoed, piped, unblocked = asyncio.run(talk())
    assert echoed == ["é".encode(), b"\x00\xff", b"12", b"1.5", b"x" * 10_000]
    assert piped == [True, 3, b"3"]
    assert unblocked is False  # no such client: answered, not refused
