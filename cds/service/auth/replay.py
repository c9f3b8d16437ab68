"""Replay protection: a `jti` seen before from the same issuer is refused until its token expires."""
from __future__ import annotations

import hashlib
import heapq
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from cds.errors import CdsError
from cds.service.auth.errors import AuthError

log = logging.getLogger(__name__)


class ReplayCache(Protocol):
    """Remembers (iss, jti) pairs until their tokens can no longer be accepted."""

    def first_use(self, issuer: str, jti: str, expires_at: float) -> bool:
        """Record the pair; True the first time, False if it was already recorded and not yet expired.
        Raises AuthError(status=503) if the cache cannot answer."""
        ...

    def readiness(self) -> str:
        """What it is, when it answers now ("redis", "local state file"); raises if it does not."""
        ...


def _replay_key(issuer: str, jti: str) -> str:
    # A digest keeps entries small and fixed-size whatever the token carries.
    return hashlib.sha256(f"{issuer}\x00{jti}".encode()).hexdigest()


class InProcessReplayCache:
    """One process's replay window: thread-safe, entries dropped at their expiry, at most `max_entries`.

    With several gunicorn worker processes each would have its own window, so a token replayed to
    another worker would pass: the service uses SqliteReplayCache (shared by a host's workers) or
    RedisReplayCache instead; this one is for embedding the verifier in a single process.
    """

    def __init__(self, max_entries: int = 200_000, clock: Callable[[], float] = time.time):
        self.max_entries = max_entries
        self._clock = clock
        self._expiry: dict[str, float] = {}
        self._by_expiry: list[tuple[float, str]] = []     # heap, so expired entries leave in O(log n)
        self._lock = threading.Lock()

    def first_use(self, issuer: str, jti: str, expires_at: float) -> bool:
        key = _replay_key(issuer, jti)
        with self._lock:
            now = self._clock()
            self._drop_expired(now)
            if key in self._expiry:
                return False
            if len(self._expiry) >= self.max_entries:
                # Dropping a live entry would reopen a replay window, so refuse instead.
                log.error("replay cache full (%d live entries); refusing tokens until some expire",
                          len(self._expiry))
                raise AuthError("replay protection is at capacity; retry shortly", status=503)
            self._expiry[key] = expires_at
            heapq.heappush(self._by_expiry, (expires_at, key))
            return True

    def readiness(self) -> str:
        return "in process"

    def _drop_expired(self, now: float) -> None:
        heap = self._by_expiry
        while heap and heap[0][0] <= now:
            expires_at, key = heapq.heappop(heap)
            if self._expiry.get(key) == expires_at:
                del self._expiry[key]

    def __len__(self) -> int:
        with self._lock:
            self._drop_expired(self._clock())
            return len(self._expiry)


class RedisReplayCache:
    """A replay window shared by every replica: one `SET key 1 NX EXAT <expiry>` per token."""

    def __init__(self, client: Any, prefix: str = "pgx-cds:jti:"):
        self.client = client
        self.prefix = prefix

    @staticmethod
    def client_for(url: str, timeout: float = 1.0) -> Any:
        """A Redis client that fails fast: one immediate retry (a pooled connection may have gone stale
        after a Redis restart), not redis-py's default backoff, which would stall every call in an outage."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                    retry=Retry(NoBackoff(), 1))

    @classmethod
    def from_url(cls, url: str, prefix: str = "pgx-cds:jti:", timeout: float = 1.0) -> RedisReplayCache:
        """Connect and ping now, so a wrong CDS_REDIS_URL stops start-up with a clear message."""
        import redis

        try:
            client = cls.client_for(url, timeout)
            client.ping()
        except ValueError as err:
            raise CdsError(f"CDS_REDIS_URL is not a Redis URL ({err})") from None
        except redis.RedisError as err:
            raise CdsError(f"CDS_REDIS_URL: cannot reach Redis for replay protection ({err})") from None
        return cls(client, prefix)

    def first_use(self, issuer: str, jti: str, expires_at: float) -> bool:
        import redis

        try:
            stored = self.client.set(self.prefix + _replay_key(issuer, jti), 1, nx=True,
                                     exat=math.ceil(expires_at))
        except redis.RedisError as err:
            log.error("replay check failed, Redis unavailable: %s", err)
            raise AuthError("replay protection is unavailable; retry shortly", status=503) from None
        return bool(stored)

    def readiness(self) -> str:
        self.client.ping()       # within the client's socket timeout; a RedisError says why not
        return "redis"


class SqliteReplayCache:
    """A replay window shared by every worker process of this host: one row per token in the local
    state file (cds.store.local_state). The default when no Redis is configured; replicas on other
    hosts need Redis."""

    def __init__(self, path: str | os.PathLike | None = None):
        from cds.store.local_state import LocalState, LocalStateUnavailable

        try:
            self.state = LocalState(path)
            self.state.check()
        except LocalStateUnavailable as err:
            raise CdsError(f"replay protection: cannot open the local state file ({err}); "
                           "set CDS_LOCAL_STATE to a writable path or CDS_REDIS_URL") from None

    def first_use(self, issuer: str, jti: str, expires_at: float) -> bool:
        from cds.store.local_state import LocalStateUnavailable

        try:
            return self.state.first_use(_replay_key(issuer, jti), expires_at)
        except LocalStateUnavailable as err:
            log.error("replay check failed, local state file unavailable: %s", err)
            raise AuthError("replay protection is unavailable; retry shortly", status=503) from None

    def readiness(self) -> str:
        self.state.check()       # one short transaction on the file, within its busy timeout
        return "local state file"


def replay_cache_from_env(environ: dict[str, str] | None = None, local_state: str | None = None) -> ReplayCache:
    """Redis when CDS_REDIS_URL is set (several replicas share one window), else the SQLite file that
    every worker process of this host shares (CDS_LOCAL_STATE)."""
    env = os.environ if environ is None else environ
    return replay_cache(env.get("CDS_REDIS_URL"), local_state or env.get("CDS_LOCAL_STATE") or None)


def replay_cache(redis_url: str | None, local_state: str | None) -> ReplayCache:
    """Redis at `redis_url` (CDS_REDIS_URL), else the SQLite file `local_state` (CDS_LOCAL_STATE)."""
    url = (redis_url or "").strip()
    if url:
        return RedisReplayCache.from_url(url)
    cache = SqliteReplayCache(local_state)
    log.info("replay protection shared by this host's workers through %s (set CDS_REDIS_URL when "
             "replicas on several hosts serve the same EHR)", cache.state.path)
    return cache
