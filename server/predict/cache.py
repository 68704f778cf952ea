"""Result caches of the single-image API: in-process LRU, or Redis shared by instances.

Both store the landmark body (server.predict.policy.landmark_body) under a key that hashes the
image bytes, the options and the model. A cache is an optimisation, never a dependency: Redis
errors turn into misses, are logged once per outage, and Redis is left alone for a while before
it is tried again, so a dead Redis costs a request at most one short timeout.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("holistream.predict")

REDIS_TTL_S = 3600  # a cached result lives an hour in Redis
REDIS_TIMEOUT_S = 0.25  # connect and command timeout: a slow cache is worse than none
REDIS_RETRY_S = 15.0  # after a failure, skip Redis this long before trying again


class PredictCache(Protocol):
    name: str

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes) -> None: ...

    async def close(self) -> None: ...


class NoCache:
    name = "off"

    async def get(self, key: str) -> bytes | None:
        return None

    async def put(self, key: str, value: bytes) -> None:
        return None

    async def close(self) -> None:
        return None


class MemoryCache:
    """Least-recently-used, bounded by entry count (a result is about 13 KB)."""

    name = "memory"

    def __init__(self, entries: int) -> None:
        self.entries = max(entries, 0)
        self._data: OrderedDict[str, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    async def get(self, key: str) -> bytes | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    async def put(self, key: str, value: bytes) -> None:
        if self.entries == 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.entries:
            self._data.popitem(last=False)

    async def close(self) -> None:
        self._data.clear()


class RedisCache:
    """Redis with a TTL per entry; unavailable means a miss, never a failed request."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        ttl_s: int = REDIS_TTL_S,
        timeout_s: float = REDIS_TIMEOUT_S,
        retry_s: float = REDIS_RETRY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.url = url
        self.ttl_s = ttl_s
        self.retry_s = retry_s
        self._clock = clock
        self._down_until = 0.0
        self._down = False
        self._client = aioredis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )

    @property
    def available(self) -> bool:
        return not self._down

    def _skip(self) -> bool:
        return self._down and self._clock() < self._down_until

    def _failed(self, exc: BaseException) -> None:
        self._down_until = self._clock() + self.retry_s
        if not self._down:
            self._down = True
            log.warning(
                "predict cache: Redis at %s unavailable (%s: %s); serving without a cache",
                _safe_url(self.url),
                type(exc).__name__,
                exc,
            )

    def _worked(self) -> None:
        if self._down:
            self._down = False
            log.info("predict cache: Redis at %s is back", _safe_url(self.url))

    async def get(self, key: str) -> bytes | None:
        if self._skip():
            return None
        try:
            value = await self._client.get(key)
        except Exception as exc:  # any Redis or socket error: a miss
            self._failed(exc)
            return None
        self._worked()
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes) -> None:
        if self._skip():
            return
        try:
            await self._client.set(key, value, ex=self.ttl_s)
        except Exception as exc:
            self._failed(exc)
            return
        self._worked()

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except Exception as exc:  # closing a dead connection must not fail shutdown
            log.debug("predict cache: closing Redis: %s", exc)


def _safe_url(url: str) -> str:
    """The URL without a password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest


def make_cache(redis_url: str | None, entries: int) -> PredictCache:
    """Redis when a URL is configured, else an in-process LRU; `entries` 0 turns caching off."""
    if entries <= 0:
        return NoCache()
    if redis_url:
        return RedisCache(redis_url)
    return MemoryCache(entries)
