"""What every long-lived stream owes its tenant and its key: the jobs API's SSE and /v1's streamed completions alike.

A tenant holds at most AIGC_MAX_STREAMS_PER_TENANT open streams, counted in Redis so every web process shares the
count; while Redis is away nothing is counted and streams open (fail open, as the rate limits do). An open stream
re-checks its key every AIGC_STREAM_KEY_CHECK_SECONDS, quiet or not, so revoking the key ends it.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from django.conf import settings
from redis import RedisError

from aigc_saas.accounts.services import key_is_active
from aigc_saas.errors import ServiceError
from aigc_saas.jobs import events
from aigc_saas.web_threads import in_thread

SLOT_TTL_SECONDS = 3600  # a crashed web process cannot hold a tenant's slots for longer


class TooManyStreams(ServiceError):
    status = 429
    code = "too_many_streams"


def _slots_key(tenant_id: Any) -> str:
    return f"aigc:streams:{tenant_id}"


async def open_stream(tenant_id: Any) -> None:
    """Take one of the tenant's stream slots, or raise TooManyStreams; give it back with `close_stream`."""
    redis_client = events._async_client()
    key = _slots_key(tenant_id)
    try:
        count = await redis_client.incr(key)
        await redis_client.expire(key, SLOT_TTL_SECONDS)
    except RedisError:
        return
    limit = settings.AIGC_MAX_STREAMS_PER_TENANT
    if count > limit:
        with contextlib.suppress(RedisError):
            await redis_client.decr(key)
        raise TooManyStreams(
            f"`stream`: this tenant already has {limit} open streams, the most AIGC_MAX_STREAMS_PER_TENANT allows; "
            "close one first",
            fields=[{"field": "stream", "code": "too_many_streams", "message": f"at most {limit} open streams"}],
        )


async def close_stream(tenant_id: Any) -> None:
    with contextlib.suppress(Exception):  # the slot expires by itself
        await events._async_client().decr(_slots_key(tenant_id))


def quiet_seconds(heartbeat: float) -> float:
    """How long a stream may wait for an event before it looks at its key again (and sends a keep-alive)."""
    return min(heartbeat, float(settings.AIGC_STREAM_KEY_CHECK_SECONDS))


class KeyWatch:
    """Whether a stream's key was revoked, asked at most every AIGC_STREAM_KEY_CHECK_SECONDS."""

    def __init__(self, key_id: Any) -> None:
        self.key_id = key_id
        self.checked = time.monotonic()
        self.every = settings.AIGC_STREAM_KEY_CHECK_SECONDS  # asked at each batch: read once, not each time

    async def revoked(self) -> bool:
        if time.monotonic() - self.checked < self.every:
            return False
        self.checked = time.monotonic()
        return not await in_thread(key_is_active)(self.key_id)
