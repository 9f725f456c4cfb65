"""The web process's threads for sync work: Django's sync views, and the database calls of async views.

A pool of long-lived threads instead of asgiref's thread per request: a new thread opened a new database
connection for every request (SQLite's open and pragmas, or a PostgreSQL connect), and each hop into a fresh
thread cost the 2-core machine about half a millisecond. Each call checks the thread's connections first and
after (Django's `close_old_connections`, which is what WSGI does per request), so `CONN_MAX_AGE` still decides
how long a connection lives, and one that broke is not reused.

The pool is the server's (aigc_saas.asgi_handler turns it on). Elsewhere, in Django's test client say, async
views keep asgiref's thread-sensitive default, where a test's transaction is visible.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

P = ParamSpec("P")
R = TypeVar("R")

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def pool() -> ThreadPoolExecutor:
    """The pool, made on first use: from then on `in_thread` sends every call to it."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=settings.AIGC_WEB_THREADS, thread_name_prefix="web")
        return _pool


def in_thread(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """`func` as a coroutine that runs it on the pool, as one request's worth of database work."""

    def call(*args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            close_old_connections()

    if _pool is None:  # not under the server
        return sync_to_async(func)
    return sync_to_async(call, thread_sensitive=False, executor=_pool)  # type: ignore[return-value]
