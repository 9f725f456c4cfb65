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

# KEYS: the buckets, taken in turn; ARGV: four numbers a bucket, rate (tokens/s), capacity, cost (tokens taken when
# allowed) and need (tokens required). A bucket that refuses ends the turn: the ones after it are neither asked nor
# charged, as when each was a call of its own and the refusal stopped the request. Returns {allowed, tokens left as
# a string} for each bucket asked (a Lua number would be truncated to an integer).
TAKE_IN_TURN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local out = {}
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[i * 4 - 3])
  local capacity = tonumber(ARGV[i * 4 - 2])
  local cost = tonumber(ARGV[i * 4 - 1])
  local need = tonumber(ARGV[i * 4])
  local state = redis.call('HMGET', key, 'tokens', 'ts')
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
    redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
    redis.call('PEXPIRE', key, math.ceil(capacity / rate * 1000) + 1000)
  end
  table.insert(out, allowed)
  table.insert(out, tostring(tokens))
  if allowed == 0 then
    break
  end
end
return out
"""


@dataclass(frozen=True)
class Bucket:
    """One take: `cost` tokens from the bucket `name` if it holds `need` (default: cost); cost 0 only looks."""

    name: str
    rate: float  # tokens a second
    capacity: int
    cost: int = 1
    need: int | None = None
    window: str = ""  # human description, e.g. "20 requests/s (burst 40)"


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
                self._script = self._redis.register_script(TAKE_IN_TURN)
                self.down_until = 0.0
            return self._script


_client = _Client()


def take(
    bucket: str, *, rate: float, capacity: int, cost: int = 1, need: int | None = None, window: str = ""
) -> Decision:
    """Take `cost` tokens from `bucket` if it holds `need` (default: cost); cost 0 only looks."""
    return take_in_turn([Bucket(bucket, rate, capacity, cost, need, window)])[0]


def take_in_turn(buckets: list[Bucket]) -> list[Decision]:
    """Take from each bucket in turn, in one round trip to Redis, until one refuses: a decision for each bucket
    asked, the refusal (if any) last. A request that passes several limits pays one round trip, not one each."""
    wanted = [(bucket, max(1, int(bucket.capacity)), max(float(bucket.rate), 1e-9), bucket.cost) for bucket in buckets]
    needs = [bucket.cost if bucket.need is None else bucket.need for bucket in buckets]
    if time.monotonic() < _client.down_until:
        return [_open(capacity, bucket.window) for bucket, capacity, _, _ in wanted]
    args: list[float | int] = []
    for (_, capacity, rate, cost), need in zip(wanted, needs, strict=True):
        args += [rate, capacity, cost, need]
    try:
        answers = _client.script()(keys=[KEY_PREFIX + bucket.name for bucket, *_ in wanted], args=args)
    except Exception as exc:  # noqa: BLE001 - the limiter must never turn a request into a 500 (bad URL, outage…)
        _client.down_until = time.monotonic() + OUTAGE_BACKOFF_SECONDS
        logger.warning(
            "rate limits are not enforced for %.0f s: Redis at %s failed (%s)",
            OUTAGE_BACKOFF_SECONDS,
            settings.REDIS_URL,
            exc,
        )
        return [_open(capacity, bucket.window) for bucket, capacity, _, _ in wanted]
    decisions = []
    for index in range(len(answers) // 2):
        (bucket, capacity, rate, _), need = wanted[index], needs[index]
        allowed, left = bool(int(answers[2 * index])), float(answers[2 * index + 1])
        decisions.append(
            Decision(
                allowed=allowed,
                limit=capacity,
                remaining=int(math.floor(left)),
                reset_seconds=math.ceil((capacity - left) / rate),
                retry_after=0 if allowed else max(1, math.ceil((max(need, 1) - left) / rate)),
                window=bucket.window,
            )
        )
    return decisions


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
