"""Probes answered before host validation, and a count and timing of every other request.

Load balancers, compose healthchecks and Prometheus reach the web by IP or `localhost`, which
DJANGO_ALLOWED_HOSTS rightly does not list: `ProbeMiddleware` sits first, so `/healthz`, `/readyz` and
`/metrics` answer whatever the Host header says (the same views are also in the URLconf).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse

from aigc_saas.middleware import HybridMiddleware
from aigc_saas.observability import health
from aigc_saas.observability.metrics import API_LATENCY, API_REQUESTS, metrics_view

PROBES: dict[str, Callable[[HttpRequest], HttpResponse]] = {
    "/healthz": health.healthz,
    "/readyz": health.readyz,
    "/metrics": metrics_view,
}


class ProbeMiddleware(HybridMiddleware):
    def __call__(self, request: HttpRequest) -> Any:
        probe = PROBES.get(request.path) if request.method in ("GET", "HEAD") else None
        if self.is_async:
            return sync_to_async(probe, thread_sensitive=False)(request) if probe else self.get_response(request)
        return probe(request) if probe else self.get_response(request)


class RequestMetricsMiddleware(HybridMiddleware):
    """`aigc_api_requests_total` and `aigc_api_request_duration_seconds`, labelled by route pattern (bounded)."""

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        started = time.perf_counter()
        response = self.get_response(request)
        _record(request, response, started)
        return response

    async def _acall(self, request: HttpRequest) -> Any:
        started = time.perf_counter()
        response = await self.get_response(request)
        _record(request, response, started)
        return response


def _record(request: HttpRequest, response: HttpResponse, started: float) -> None:
    match = getattr(request, "resolver_match", None)
    route = match.route if match is not None and match.route else "unmatched"
    method = request.method if request.method in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD") else "other"
    API_REQUESTS.labels(method, route, str(response.status_code)).inc()
    API_LATENCY.labels(method, route).observe(time.perf_counter() - started)
