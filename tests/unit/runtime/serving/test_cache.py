"""Cache keys (canonical, per tenant), the in-process store, and the failure breaker."""

from __future__ import annotations

import asyncio

from redis.exceptions import ConnectionError as RedisConnectionError

from kubellm.runtime.serving.cache import ANONYMOUS_TENANT, MemoryStore, ResponseCache, cache_key, tenant_of


def test_the_key_ignores_key_order_and_depends_on_every_field() -> None:
    request = {"model": "m", "prompt": "hi", "params": {"temperature": 0.0, "max_tokens": 5}}
    reordered = {"params": {"max_tokens": 5, "temperature": 0.0}, "prompt": "hi", "model": "m"}
    assert cache_key("p", "t", request) == cache_key("p", "t", reordered)
    assert cache_key("p", "t", request) != cache_key("p", "t", {**request, "prompt": "hi!"})
    assert cache_key("p", "t", request).startswith("p:t:")


def test_tenants_never_share_keys_and_never_expose_the_api_key() -> None:
    request = {"prompt": "same"}
    alice, bob = tenant_of("key-a"), tenant_of("key-b")
    assert alice != bob
    assert "key-a" not in cache_key("p", alice, request)
    assert cache_key("p", alice, request) != cache_key("p", bob, request)
    assert tenant_of(None, "team-1") != tenant_of(None, "team-2")
    assert tenant_of(None) == ANONYMOUS_TENANT


def test_memory_store_expires_and_evicts_the_least_recently_used() -> None:
    now = [0.0]
    store = MemoryStore(max_entries=2, clock=lambda: now[0])

    async def scenario() -> list[bytes | None]:
        await store.set("a", b"1", ttl_seconds=10)
        await store.set("b", b"2", ttl_seconds=10)
        seen = [await store.get("a")]  # a is now the most recently used, b the least
        await store.set("c", b"3", ttl_seconds=10)  # full: b goes
        seen += [await store.get("b"), await store.get("a"), await store.get("c")]
        now[0] = 9.5
        seen.append(await store.get("c"))  # still alive just before its ttl
        now[0] = 10.0
        return [*seen, await store.get("a"), await store.get("c")]  # both expired at their ttl

    assert asyncio.run(scenario()) == [b"1", None, b"1", b"3", b"3", None, None]


class _BrokenStore:
    async def get(self, key: str) -> bytes | None:
        raise RedisConnectionError("connection refused")

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        raise RedisConnectionError("connection refused")

    async def close(self) -> None:
        return None


def test_a_failing_store_is_counted_then_left_alone_for_a_while() -> None:
    errors: list[int] = []
    now = [0.0]
    cache = ResponseCache(_BrokenStore(), ttl_seconds=5, on_error=lambda: errors.append(1), clock=lambda: now[0])

    async def scenario() -> list[object]:
        first = await cache.get("k")
        await cache.set("k", {"x": 1})  # paused: not even tried
        now[0] = 10.0
        await cache.set("k", {"x": 1})
        return [first, cache.available]

    assert asyncio.run(scenario()) == [None, False]
    assert len(errors) == 2


def test_a_round_trip_through_the_memory_store() -> None:
    cache = ResponseCache(MemoryStore(), ttl_seconds=5, on_error=lambda: None)

    async def scenario() -> object:
        await cache.set("k", {"choices": [["hi", "stop"]]})
        return await cache.get("k")

    assert asyncio.run(scenario()) == {"choices": [["hi", "stop"]]}
