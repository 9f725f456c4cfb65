"""Per-key rate limits as DRF throttles: requests per second (with a burst) and job submissions per minute.

Both are token buckets in Redis (`accounts.ratelimit`), so every web process counts against the same
budget. A refusal is a 429 `rate_limited` with `Retry-After`; every limited response carries
`X-RateLimit-Limit/Remaining/Reset` (set by `accounts.middleware.RateLimitHeaders`).

A view whose POST creates jobs says so with `throttle_scope = "submissions"` (routes added later, such as
the OpenAI-compatible ones, do the same; a view with its own `throttle_classes` lists both classes).
Code that creates jobs outside such a view calls `check_submission(request, api_key)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from rest_framework import exceptions
from rest_framework.throttling import BaseThrottle

from aigc_saas.accounts import ratelimit
from aigc_saas.accounts.models import ApiKey, Tenant
from aigc_saas.accounts.ratelimit import Decision

SUBMISSIONS = "submissions"
DECISIONS_ATTR = "aigc_rate_limits"


@dataclass(frozen=True)
class Limits:
    requests_per_second: int
    burst: int
    submissions_per_minute: int


def limits_for(tenant: Tenant) -> Limits:
    """The tenant's own limits where set, the deployment's defaults elsewhere."""
    return Limits(
        requests_per_second=_pick(tenant.requests_per_second, settings.AIGC_RATE_LIMIT_PER_SECOND),
        burst=_pick(tenant.request_burst, settings.AIGC_RATE_LIMIT_BURST),
        submissions_per_minute=_pick(tenant.submissions_per_minute, settings.AIGC_SUBMISSIONS_PER_MINUTE),
    )


def _pick(own: int | None, default: int) -> int:
    return own if own is not None else default


class RateLimited(exceptions.Throttled):
    """429 `rate_limited`; DRF adds `Retry-After` from `wait`."""

    default_code = "rate_limited"


def attach(request: Any, decision: Decision) -> None:
    """Remember a decision on the Django request so the middleware can write the headers."""
    django_request: HttpRequest = getattr(request, "_request", request)
    decisions = getattr(django_request, DECISIONS_ATTR, None)
    if decisions is None:
        decisions = []
        setattr(django_request, DECISIONS_ATTR, decisions)
    decisions.append(decision)


def enforce(request: Any, decision: Decision, message: str) -> Decision:
    attach(request, decision)
    if not decision.allowed:
        raise RateLimited(wait=decision.retry_after, detail=f"{message}; this limit is {decision.window}.")
    return decision


def take_request(key: ApiKey) -> Decision:
    """Count one API request of `key` against its requests/s bucket (helper for code outside DRF views)."""
    limits = limits_for(key.tenant)
    return ratelimit.take(
        f"req:{key.prefix}",
        rate=limits.requests_per_second,
        capacity=max(limits.burst, 1),
        window=f"{limits.requests_per_second} requests/s with bursts of {limits.burst}",
    )


def take_submission(key: ApiKey) -> Decision:
    """Count one job submission of `key` against its submissions/min bucket."""
    per_minute = limits_for(key.tenant).submissions_per_minute
    return ratelimit.take(
        f"sub:{key.prefix}",
        rate=per_minute / 60.0,
        capacity=max(per_minute, 1),
        window=f"{per_minute} submissions/min",
    )


def check_submission(request: Any, key: ApiKey) -> Decision:
    """For any code path that creates jobs outside a throttled view: count it, or raise a 429."""
    return enforce(request, take_submission(key), "`Authorization`: this API key submits jobs too fast")


def _api_key(request: Any) -> ApiKey | None:
    return getattr(getattr(request, "user", None), "api_key", None)


class KeyRateThrottle(BaseThrottle):
    """Requests per second per API key, with a burst."""

    def allow_request(self, request: Any, view: Any) -> bool:
        key = _api_key(request)
        if key is None:
            return True
        enforce(request, take_request(key), "`Authorization`: this API key sends requests too fast")
        return True


class SubmissionRateThrottle(BaseThrottle):
    """Job submissions per minute per API key: the POSTs of views that set `throttle_scope = "submissions"`."""

    def allow_request(self, request: Any, view: Any) -> bool:
        key = _api_key(request)
        if key is None or request.method != "POST" or getattr(view, "throttle_scope", None) != SUBMISSIONS:
            return True
        check_submission(request, key)
        return True
