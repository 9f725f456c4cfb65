"""Django's ASGI handler with one thread hop for a request that a sync view answers.

Under Django's own handler a request to a sync view crossed between the event loop and a thread five to seven
times (the `request_started` signal, every boundary of sync and async middleware, Django's `MiddlewareMixin`
running `process_request` and `process_response` in threads, the view, `response.close`), and each request got a
new thread and so a new database connection. On the 2-core machine that made `GET /account` cost 10 ms of CPU
under the ASGI handler against 4.7 ms through the sync handler, and the per-job web CPU of the serving bench
(one submission and one long poll) was as large as the worker's.

Here a request whose view is sync runs whole (signals, the sync middleware chain, the view, closing) in one call
on a pool of long-lived threads, which keep their database connections as `CONN_MAX_AGE` allows (each request
starts with Django's `close_old_connections`, as under WSGI). Async views (SSE, long polls, the OpenAI routes)
keep Django's async path, untouched. `AIGC_WEB_THREADS` sizes the pool per web process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler as DjangoASGIHandler
from django.core.handlers.asgi import get_script_prefix
from django.core.handlers.base import BaseHandler
from django.http import HttpResponse, QueryDict
from django.urls import Resolver404, ResolverMatch, get_resolver, set_script_prefix
from rest_framework.views import APIView

from aigc_saas.web_threads import pool


class _SyncChain(BaseHandler):
    """The sync middleware chain; a route whose async view has a sync twin (`sync_view`) gets the twin here.
    `leave_out`: middleware this chain does without (the API's chain leaves out the pages' own)."""

    def __init__(self, leave_out: frozenset[str] = frozenset()) -> None:
        super().__init__()
        every = settings.MIDDLEWARE  # Django reads the list only here, once, at start-up
        settings.MIDDLEWARE = [m for m in every if m not in leave_out]
        try:
            self.load_middleware(is_async=False)
        finally:
            settings.MIDDLEWARE = every

    def resolve_request(self, request: Any) -> ResolverMatch:
        match = super().resolve_request(request)
        twin = getattr(match.func, "sync_view", None)
        if twin is not None:
            match.func = twin
        return match


def needs_async(func: Callable[..., Any], query: bytes) -> bool:
    """Whether this view must run in the event loop for this query (it waits); else its sync path serves it."""
    if not iscoroutinefunction(func):
        return False
    waits = getattr(func, "waits", None)  # an async view with a sync twin says when it needs to wait
    return waits is None or getattr(func, "sync_view", None) is None or waits(QueryDict(query))


# Async views are API routes, authenticated by API key: the admin's session, CSRF cookie, user and messages, and
# the static files and frame options of HTML pages, are not theirs. In async mode each of Django's middleware
# runs its hooks in threads (two hops each), so their chain leaves these out. Sync DRF views that answer only JSON
# (every API route but the Swagger page) get a sync chain without them too: on the 2-core machine they were about
# a tenth of a submission's web CPU (the messages' storage made, the session and CSRF hooks, a header nobody
# frames), for nothing an API-key client sees.
# Django's SecurityMiddleware stays in MIDDLEWARE (the deploy checks look for it); async views get the same
# hooks run in the event loop.
ASYNC_VARIANTS = {"django.middleware.security.SecurityMiddleware": "aigc_saas.middleware.SecurityHeaders"}
PAGE_ONLY_MIDDLEWARE = {
    "aigc_saas.middleware.StaticFiles",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
}


def answers_json_only(func: Callable[..., Any]) -> bool:
    """Whether a route's view is a DRF view that renders no HTML: an API route, not a page."""
    known = _JSON_ONLY.get(func)
    if known is None:
        view = getattr(func, "sync_view", None) or func
        cls = getattr(view, "cls", None) or getattr(func, "cls", None)
        renderers = (getattr(view, "initkwargs", None) or {}).get(
            "renderer_classes", getattr(cls, "renderer_classes", ())
        )
        known = (
            isinstance(cls, type)
            and issubclass(cls, APIView)
            and all(r.media_type != "text/html" and r.format not in ("html", "api") for r in renderers)
        )
        _JSON_ONLY[func] = known
    return known


_JSON_ONLY: dict[Callable[..., Any], bool] = {}


class ASGIHandler(DjangoASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self.sync_chain = _SyncChain()
        self.api_chain = _SyncChain(leave_out=frozenset(PAGE_ONLY_MIDDLEWARE))
        pool()  # async views' database calls go to the same threads from now on

    def load_middleware(self, is_async: bool = False) -> None:
        if not is_async:
            return super().load_middleware(is_async)
        every = settings.MIDDLEWARE  # Django reads the list only here, once, at start-up
        settings.MIDDLEWARE = [ASYNC_VARIANTS.get(m, m) for m in every if m not in PAGE_ONLY_MIDDLEWARE]
        try:
            return super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = every

    def _chain(self, scope: dict[str, Any]) -> _SyncChain | None:
        """The sync chain that answers this request, or None when its view must run in the event loop."""
        try:
            match = get_resolver().resolve(scope["path"][len(scope.get("root_path", "")) :] or "/")
        except Resolver404:
            return self.sync_chain  # probes and static files are middleware; the rest is a 404
        if needs_async(match.func, scope.get("query_string", b"")):
            return None
        return self.api_chain if answers_json_only(match.func) else self.sync_chain

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        chain = self._chain(scope)
        if chain is None:
            return await self._handle_async(scope, receive, send)
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        try:
            # Not web_threads.in_thread: `request_started` and `response.close()` do its connection checks here.
            response = await sync_to_async(self._respond, thread_sensitive=False, executor=pool())(
                chain, scope, body_file
            )
            with contextlib.suppress(asyncio.CancelledError):  # the client went away while the response was sent
                await self.send_response(response, send)
            if response.streaming:  # a file: closed once sent (a plain response was closed in its thread)
                await sync_to_async(response.close, thread_sensitive=False, executor=pool())()
        finally:
            body_file.close()

    async def _handle_async(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Django's `handle` for an async view, with `request_started` and the response's closing (which sends
        `request_finished`) run in the event loop instead of a hop each to a thread made for the request.

        Their receivers are Django's: `close_old_connections` and `reset_queries` act on the calling thread's
        database connections, and the event loop's thread has none (async views reach the database through
        `web_threads.in_thread`, which checks its thread's connections around every call).
        """
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        try:
            set_script_prefix(get_script_prefix(scope))
            signals.request_started.send(sender=self.__class__, scope=scope)
            request, error = self.create_request(scope, body_file)
            if request is None:
                await self.send_response(error, send)
                error.close()
                return

            async def respond() -> HttpResponse:
                response = await self.run_get_response(request)
                with contextlib.suppress(asyncio.CancelledError):  # the client went away while it was sent
                    await self.send_response(response, send)
                return response

            # As Django does: a client that disconnects cancels the view (an event stream stops waiting).
            tasks = [asyncio.create_task(self.listen_for_disconnect(receive)), asyncio.create_task(respond())]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task.done():
                    with contextlib.suppress(RequestAborted):
                        task.result()
                else:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            try:
                response = tasks[1].result()
            except asyncio.CancelledError:
                signals.request_finished.send(sender=self.__class__)
            else:
                response.close()
        finally:
            body_file.close()

    def _respond(self, chain: _SyncChain, scope: dict[str, Any], body_file: Any) -> HttpResponse:
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)  # close_old_connections, as WSGI does
        request, error = self.create_request(scope, body_file)
        response = error if request is None else chain.get_response(request)
        response._handler_class = self.__class__
        if not response.streaming:
            response.close()  # request_finished in this thread: its connection follows CONN_MAX_AGE
        return response
