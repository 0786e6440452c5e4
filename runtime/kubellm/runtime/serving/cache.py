"""The exact-match response cache: deterministic requests only, keys per tenant, never a failure.

A key is the SHA-256 of the canonical JSON (sorted keys, no spaces) of everything that decides
the answer: the endpoint, model and adapter, the model's URI and revision, the prompt or
messages, the generation parameters, and the tenant (the caller's API key identity). Only
deterministic requests (temperature 0, or an explicit seed) are cached, so a sampled request is
never answered from the cache and two tenants never share an entry.

Two stores: Redis (``SET key value EX ttl``, so Redis itself expires entries) when a URL is
configured, else a bounded in-process LRU; ``enabled: false`` means neither (no cache). A Redis
that is down or slow costs only hits: every call has a short timeout, a failure is counted and
the request goes on to generate; after a failure Redis is left alone for a moment.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

__all__ = [
    "ANONYMOUS_TENANT",
    "CacheStore",
    "MemoryStore",
    "RedisStore",
    "ResponseCache",
    "cache_key",
    "tenant_of",
]

log = logging.getLogger(__name__)

ANONYMOUS_TENANT = "anonymous"


def tenant_of(api_key: str | None, tenant_header: str | None = None) -> str:
    """A tenant id: a digest of the API key (never the key itself), else the header, else anonymous."""
    if api_key:
        return "key-" + hashlib.sha256(api_key.encode()).hexdigest()[:24]
    if tenant_header:
        return "tenant-" + hashlib.sha256(tenant_header.encode()).hexdigest()[:24]
    return ANONYMOUS_TENANT


def cache_key(prefix: str, tenant: str, request: Mapping[str, Any]) -> str:
    """``<prefix>:<tenant>:<sha256 of the canonical JSON of the request>``."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{prefix}:{tenant}:{hashlib.sha256(canonical.encode()).hexdigest()}"


class CacheStore(Protocol):
    """Where cached responses live."""

    async def get(self, key: str) -> bytes | None:
        """The stored value, or None."""
        ...

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        """Store a value for ``ttl_seconds``."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class MemoryStore:
    """A bounded in-process LRU with expiry: the default when no Redis is configured."""

    def __init__(self, max_entries: int = 1024, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max_entries = max_entries
        self._clock = clock

    async def get(self, key: str) -> bytes | None:
        """The value if present and not expired."""
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self._clock():
            self._entries.pop(key, None)
            return None
        self._entries.move_to_end(key)
        return entry[1]

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        """Store, evicting the least recently used entry when full."""
        if self._max_entries <= 0:
            return
        self._entries[key] = (self._clock() + ttl_seconds, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    async def close(self) -> None:
        """Nothing to release."""
        self._entries.clear()


class RedisStore:
    """Redis with short timeouts; connection and command errors surface as ``RedisError``/``OSError``."""

    def __init__(self, url: str, password: str | None = None, timeout_seconds: float = 0.25) -> None:
        # One immediate retry on a connection error: after Redis restarts, every pooled connection
        # is dead, and without it each one failed a request's lookup (and paused the cache) in turn.
        # A Redis that is really down refuses the retry at once; a slow one is not retried.
        self._client: Any = aioredis.Redis.from_url(
            url,
            password=password,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,)),
            retry_on_timeout=False,
        )

    async def get(self, key: str) -> bytes | None:
        """GET key."""
        value = await self._client.get(key)
        return bytes(value) if value is not None else None

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        """SET key value EX ttl."""
        await self._client.set(key, value, ex=ttl_seconds)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


class ResponseCache:
    """A store behind a circuit breaker: failures are counted, then the store is skipped briefly."""

    def __init__(
        self,
        store: CacheStore,
        *,
        ttl_seconds: int,
        on_error: Callable[[], None],
        pause_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.ttl_seconds = ttl_seconds
        self._on_error = on_error
        self._pause_seconds = pause_seconds
        self._clock = clock
        self._paused_until = 0.0

    @property
    def available(self) -> bool:
        """False while the store is being left alone after a failure."""
        return self._clock() >= self._paused_until

    async def get(self, key: str) -> dict[str, Any] | None:
        """The cached response, or None on a miss, a failure, or while paused."""
        if not self.available:
            return None
        try:
            raw = await self.store.get(key)
            return json.loads(raw) if raw is not None else None
        except (RedisError, OSError, ValueError) as error:
            self._failed("get", error)
            return None

    async def set(self, key: str, response: Mapping[str, Any]) -> None:
        """Store a response; a failure is counted and ignored."""
        if not self.available:
            return
        try:
            await self.store.set(key, json.dumps(response).encode(), self.ttl_seconds)
        except (RedisError, OSError) as error:
            self._failed("set", error)

    def _failed(self, operation: str, error: Exception) -> None:
        self._on_error()
        self._paused_until = self._clock() + self._pause_seconds
        log.warning("response cache %s failed; bypassing it for %.1fs: %s", operation, self._pause_seconds, error)
