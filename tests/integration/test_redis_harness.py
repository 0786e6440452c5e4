"""The real redis-server fixture: reachable, expiring keys, stopped afterwards."""

from __future__ import annotations

import time

import pytest
import redis

from tests.harness.redis import RedisServer, running_redis

pytestmark = pytest.mark.integration


def test_redis_server_stores_and_expires(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.ping() is True
        client.set("kubellm:probe", b"value", ex=1)
        assert client.get("kubellm:probe") == b"value"
        assert 0 < int(client.ttl("kubellm:probe")) <= 1
        deadline = time.monotonic() + 5
        while client.exists("kubellm:probe") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not client.exists("kubellm:probe")
    finally:
        client.close()


def test_second_redis_runs_beside_and_stops() -> None:
    with running_redis() as server:
        client = redis.Redis.from_url(server.url)
        assert client.ping() is True
        client.close()
        process = server.process
    assert process.poll() is not None
    refused = redis.Redis.from_url(server.url, socket_connect_timeout=1)
    with pytest.raises(redis.ConnectionError):
        refused.ping()
    refused.close()
