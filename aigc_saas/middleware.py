"""Middleware shared by the whole site: a base for middleware that is both sync and async, and the API checks.

Under ASGI Django hops between the event loop and a thread at every boundary between async-capable and
sync-only middleware, and runs each hook of its own `MiddlewareMixin` middleware in a thread. Ours are sync
and async alike, so the chain of async views (aigc_saas/asgi_handler.py builds it without the admin's
middleware) runs in the event loop with no hop; sync views run the sync chain in one hop there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.security import SecurityMiddleware
from whitenoise.middleware import WhiteNoiseMiddleware

from aigc_saas.api.errors import json_error
from aigc_saas.validation import NUL_MESSAGE, nul_in_request

UPLOAD_FORM_OVERHEAD = 64 * 1024  # multipart boundaries and part headers around an upload


class HybridMiddleware:
    """Sync under WSGI, async under ASGI. A subclass implements `refuse(request)`: a response that ends the
    request before the rest of the chain (None lets it through); override `__call__` for more."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[..., Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def refuse(self, request: HttpRequest) -> HttpResponse | None:
        return None

    def __call__(self, request: HttpRequest) -> Any:
        refusal = self.refuse(request)
        if refusal is None:
            return self.get_response(request)
        return answered(refusal) if self.is_async else refusal


async def answered(response: HttpResponse) -> HttpResponse:
    """A response made without waiting, as the awaitable an async middleware chain expects."""
    return response


class StaticFiles(WhiteNoiseMiddleware):
    """WhiteNoise, in the event loop under ASGI: only a static file is served from a thread."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(get_response, *args, **kwargs)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if not self.is_async:
            return super().__call__(request)
        if self.autorefresh:  # development: it looks on disk, which the event loop must not wait for
            return self._find_then_answer(request)
        found = self.files.get(request.path_info)
        if found is None:
            return self.get_response(request)
        return sync_to_async(self.serve, thread_sensitive=False)(found, request)

    async def _find_then_answer(self, request: HttpRequest) -> HttpResponse:
        found = await sync_to_async(self.find_file, thread_sensitive=False)(request.path_info)
        if found is None:
            return await self.get_response(request)
        return await sync_to_async(self.serve, thread_sensitive=False)(found, request)


class SecurityHeaders(SecurityMiddleware):
    """Django's SecurityMiddleware with its hooks run in the event loop under ASGI: they only read the request
    and set headers, where Django's async adapter ran each in a thread."""

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        response = self.process_request(request) or await self.get_response(request)
        return self.process_response(request, response)


class ApiBodySizeLimit(HybridMiddleware):
    """Refuse oversized API bodies before anything reads them."""

    def refuse(self, request: HttpRequest) -> HttpResponse | None:
        if not request.path.startswith("/api/"):
            return None
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if request.path.rstrip("/").endswith("/api/v1/assets"):
            # Uploads: the file's own limit is checked (code `asset_too_large`) once the form is parsed.
            limit = settings.AIGC_ASSET_MAX_BYTES + UPLOAD_FORM_OVERHEAD
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return json_error(400, "invalid_content_length", "`Content-Length`: must be an integer")
        if limit is not None and length > limit:
            return json_error(
                413, "payload_too_large", f"`body`: {length} bytes is over this server's limit of {limit} bytes"
            )
        return None


class RefuseNulInRequest(HybridMiddleware):
    """A NUL in the path or the query string is a 400 naming it, before any view puts it into a database query
    (PostgreSQL refuses NUL in text parameters, which surfaced as a 500)."""

    def refuse(self, request: HttpRequest) -> HttpResponse | None:
        if request.path.startswith("/api/") and (field := nul_in_request(request)):
            message = f"`{field}`: {NUL_MESSAGE}"
            body = {"error": {"code": "null_character", "message": message, "fields": []}}
            body["error"]["fields"] = [{"field": field, "code": "null_character", "message": message}]
            return JsonResponse(body, status=400)
        return None
