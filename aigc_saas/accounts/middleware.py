"""Write `X-RateLimit-*` headers for the rate-limit decisions a request collected (see accounts.throttling)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from aigc_saas.accounts.ratelimit import Decision
from aigc_saas.accounts.throttling import DECISIONS_ATTR


def _tightest(decisions: list[Decision]) -> Decision:
    """A refusal if there was one, else the bucket closest to empty (relative to its size)."""
    refused = [d for d in decisions if not d.allowed]
    if refused:
        return refused[-1]
    return min(decisions, key=lambda d: d.remaining / d.limit)


def add_headers(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    decisions: list[Decision] | None = getattr(request, DECISIONS_ATTR, None)
    if decisions:
        chosen = _tightest(decisions)
        response["X-RateLimit-Limit"] = str(chosen.limit)
        response["X-RateLimit-Remaining"] = str(chosen.remaining)
        response["X-RateLimit-Reset"] = str(chosen.reset_seconds)
        if not chosen.allowed:
            response["Retry-After"] = str(chosen.retry_after)
    return response


class RateLimitHeaders:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self.__acall__(request)
        return add_headers(request, self.get_response(request))

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        return add_headers(request, await self.get_response(request))
