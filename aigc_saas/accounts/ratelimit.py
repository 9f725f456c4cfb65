"""Token buckets in Redis, shared by every web process; a Redis outage lets requests through (fail open).

One Lua script refills and takes atomically with Redis's own clock, so processes on different hosts agree.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

# Bounded so a slow or absent Redis costs a request at most this long, and then nothing for a while.
SOCKET_TIMEOUT_SECONDS = 0.25
OUTAGE_BACKOFF_SECONDS = 5.0
KEY_PREFIX = "aigc:rl:"

# KEYS[1] bucket; ARGV: rate (tokens/s), capacity, cost (tokens taken when allowed), need (tokens required).
# Returns {allowed, tokens left as a string} (a Lua number would be truncated to an integer).
TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local need = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local allowed = 0
if tokens >= need then
  allowed = 1
  tokens = math.max(0, tokens - cost)
end
if cost > 0 then
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
end
return {allowed, tostring(tokens)}
"""


@dataclass(frozen=True)
class Decision:
    """The outcome of one take, with what the X-RateLimit-* and Retry-After headers need."""

    allowed: bool
    limit: int  # the bucket's capacity
    remaining: int  # whole tokens left
    reset_seconds: int  # until the bucket is full again
    retry_after: int  # until one more token (0 when allowed)
    window: str = ""  # human description, e.g. "20 requests/s (burst 40)"
    degraded: bool = False  # Redis could not be asked: allowed without counting


class _Client:
    """One connection pool per REDIS_URL (tests change it), plus a short circuit breaker for outages."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._url = ""
        self._redis: redis.Redis | None = None
        self._script = None
        self.down_until = 0.0

    def script(self):  # noqa: ANN201
        url = settings.REDIS_URL
        with self._lock:
            if self._redis is None or url != self._url:
                self._url = url
                self._redis = redis.Redis.from_url(
                    url,
                    socket_timeout=SOCKET_TIMEOUT_SECONDS,
                    socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
                    health_check_interval=30,
                )
                self._script = self._redis.register_script(TOKEN_BUCKET)
                self.down_until = 0.0
            return self._script


_client = _Client()


def take(
    bucket: str, *, rate: float, capacity: int, cost: int = 1, need: int | None = None, window: str = ""
) -> Decision:
    """Take `cost` tokens from `bucket` if it holds `need` (default: cost); cost 0 only looks."""
    need = cost if need is None else need
    capacity = max(1, int(capacity))
    rate = max(float(rate), 1e-9)
    if time.monotonic() < _client.down_until:
        return _open(capacity, window)
    try:
        allowed, tokens = _client.script()(keys=[KEY_PREFIX + bucket], args=[rate, capacity, cost, need])
    except Exception as exc:  # noqa: BLE001 - the limiter must never turn a request into a 500 (bad URL, outage…)
        _client.down_until = time.monotonic() + OUTAGE_BACKOFF_SECONDS
        logger.warning(
            "rate limits are not enforced for %.0f s: Redis at %s failed (%s)",
            OUTAGE_BACKOFF_SECONDS,
            settings.REDIS_URL,
            exc,
        )
        return _open(capacity, window)
    left = float(tokens)
    return Decision(
        allowed=bool(int(allowed)),
        limit=capacity,
        remaining=int(math.floor(left)),
        reset_seconds=math.ceil((capacity - left) / rate),
        retry_after=0 if int(allowed) else max(1, math.ceil((max(need, 1) - left) / rate)),
        window=window,
    )


def _open(capacity: int, window: str) -> Decision:
    return Decision(True, capacity, capacity, 0, 0, window, degraded=True)


def reset(bucket: str) -> None:
    """Forget a bucket (an operator unlocking a client, or a test starting clean)."""
    try:
        _client.script()  # make sure the client exists for the current URL
        if _client._redis is not None:
            _client._redis.delete(KEY_PREFIX + bucket)
    except redis.RedisError as exc:
        logger.warning("could not reset rate-limit bucket %s: %s", bucket, exc)


def reset_all() -> int:
    """Forget every bucket (tests start each case clean); the number of buckets removed."""
    try:
        _client.script()
        client = _client._redis
        if client is None:
            return 0
        keys = list(client.scan_iter(match=KEY_PREFIX + "*", count=1000))
        return client.delete(*keys) if keys else 0
    except redis.RedisError as exc:
        logger.warning("could not reset the rate-limit buckets: %s", exc)
        return 0
