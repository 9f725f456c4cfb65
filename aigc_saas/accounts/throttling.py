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
from aigc_saas.accounts.ratelimit import Bucket, Decision

SUBMISSIONS = "submissions"
DECISIONS_ATTR = "aigc_rate_limits"
TAKEN_ATTR = "aigc_rate_limits_taken"


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


def request_bucket(key: ApiKey) -> Bucket:
    """One API request of `key` against its requests/s bucket."""
    limits = limits_for(key.tenant)
    return Bucket(
        f"req:{key.prefix}",
        rate=limits.requests_per_second,
        capacity=max(limits.burst, 1),
        window=f"{limits.requests_per_second} requests/s with bursts of {limits.burst}",
    )


def submission_bucket(key: ApiKey) -> Bucket:
    """One job submission of `key` against its submissions/min bucket."""
    per_minute = limits_for(key.tenant).submissions_per_minute
    return Bucket(
        f"sub:{key.prefix}", rate=per_minute / 60.0, capacity=max(per_minute, 1), window=f"{per_minute} submissions/min"
    )


def take_request(key: ApiKey) -> Decision:
    """Count one API request of `key` against its requests/s bucket (helper for code outside DRF views)."""
    return ratelimit.take_in_turn([request_bucket(key)])[0]


def take_submission(key: ApiKey) -> Decision:
    """Count one job submission of `key` against its submissions/min bucket."""
    return ratelimit.take_in_turn([submission_bucket(key)])[0]


def view_buckets(request: Any, key: ApiKey) -> list[tuple[str, Bucket]]:
    """The buckets this request's view throttles it by, in the view's order: ("request" | "submission", bucket).
    The API key's authentication takes them in the same round trip as the address's lockout check, and the
    throttles then enforce what was taken (`taken`) instead of asking Redis again."""
    view = (getattr(request, "parser_context", None) or {}).get("view")
    if view is None:
        return []
    chosen = []
    for throttle in view.get_throttles():
        if isinstance(throttle, KeyRateThrottle):
            chosen.append(("request", request_bucket(key)))
        elif isinstance(throttle, SubmissionRateThrottle) and throttle.applies(request, view):
            chosen.append(("submission", submission_bucket(key)))
    return chosen


def remember_taken(request: Any, kinds: list[str], decisions: list[Decision]) -> None:
    """Keep the decisions authentication took for the throttles (a refusal ends the list: nothing after it was
    taken, and its throttle refuses before any later one runs)."""
    django_request: HttpRequest = getattr(request, "_request", request)
    setattr(django_request, TAKEN_ATTR, dict(zip(kinds, decisions, strict=False)))


def taken(request: Any, kind: str) -> Decision | None:
    """The decision authentication already took for this throttle, once."""
    django_request: HttpRequest = getattr(request, "_request", request)
    return (getattr(django_request, TAKEN_ATTR, None) or {}).pop(kind, None)


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
        decision = taken(request, "request") or take_request(key)
        enforce(request, decision, "`Authorization`: this API key sends requests too fast")
        return True


class SubmissionRateThrottle(BaseThrottle):
    """Job submissions per minute per API key: the POSTs of views that set `throttle_scope = "submissions"`."""

    def applies(self, request: Any, view: Any) -> bool:
        return request.method == "POST" and getattr(view, "throttle_scope", None) == SUBMISSIONS

    def allow_request(self, request: Any, view: Any) -> bool:
        key = _api_key(request)
        if key is None or not self.applies(request, view):
            return True
        decision = taken(request, "submission") or take_submission(key)
        enforce(request, decision, "`Authorization`: this API key submits jobs too fast")
        return True
