"""Admin login throttling: a small Redis counter, per client address and per username.

Why not django-axes: it needs its own tables, an authentication backend that demands a request on every
`authenticate()` (test clients' `login()` break) and its middleware; this needs one form and two Redis keys,
and Redis (already required) shares the counts between every web process.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from typing import Any

import redis
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError

log = logging.getLogger(__name__)


def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)


def _keys(address: str, username: str) -> list[str]:
    user = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
    return [f"aigc:admin-login:ip:{address}", f"aigc:admin-login:user:{user}"]


def failures(address: str, username: str) -> int:
    try:
        counts = _redis().mget(_keys(address, username))
    except redis.RedisError as exc:
        log.warning("admin login throttle: Redis unavailable (%s), not counting", exc)
        return 0
    return max(int(count or 0) for count in counts)


def record_failure(address: str, username: str) -> None:
    try:
        with _redis().pipeline() as pipe:
            for key in _keys(address, username):
                # The window starts at the first failure (SET NX EX works on every Redis; EXPIRE NX needs 7).
                pipe.set(key, 0, ex=settings.AIGC_ADMIN_LOGIN_LOCKOUT_SECONDS, nx=True)
                pipe.incr(key)
            pipe.execute()
    except redis.RedisError as exc:
        log.warning("admin login throttle: Redis unavailable (%s), failure not recorded", exc)


def clear(address: str, username: str) -> None:
    with contextlib.suppress(redis.RedisError):
        _redis().delete(_keys(address, username)[1])  # the user's count; the address keeps its own


class ThrottledAdminLoginForm(AdminAuthenticationForm):
    """After AIGC_ADMIN_LOGIN_MAX_FAILURES failures from one address or for one username, every attempt is
    refused (without checking the password) until AIGC_ADMIN_LOGIN_LOCKOUT_SECONDS have passed."""

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "throttled": "Too many failed logins. Try again in %(minutes)s minutes.",
    }

    def clean(self) -> dict[str, Any]:
        address = (self.request.META.get("REMOTE_ADDR") or "unknown") if self.request else "unknown"
        username = self.cleaned_data.get("username") or ""
        if failures(address, username) >= settings.AIGC_ADMIN_LOGIN_MAX_FAILURES:
            minutes = max(settings.AIGC_ADMIN_LOGIN_LOCKOUT_SECONDS // 60, 1)
            raise ValidationError(self.error_messages["throttled"], code="throttled", params={"minutes": minutes})
        try:
            cleaned = super().clean()
        except ValidationError:
            record_failure(address, username)
            raise
        clear(address, username)
        return cleaned
