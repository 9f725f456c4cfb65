"""Who is acting in the current request or command, for the audit log's `actor`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any


@dataclass
class Actor:
    """Mutable on purpose: authentication runs deeper in the stack than the middleware that installs it."""

    user: Any = None  # a Django user (admin session)
    api_key_prefix: str = ""
    label: str = ""  # e.g. "cli:create_api_key"

    def describe(self) -> str:
        if self.api_key_prefix:
            return f"api_key:aigc_{self.api_key_prefix}"
        user = self.user
        if user is not None and getattr(user, "is_authenticated", False):
            return f"user:{user.get_username()}"
        return self.label or "system"

    def user_id(self) -> int | None:
        user = self.user
        return user.pk if user is not None and getattr(user, "is_authenticated", False) else None


_current: ContextVar[Actor | None] = ContextVar("aigc_audit_actor", default=None)


def current() -> Actor:
    return _current.get() or Actor()


@contextmanager
def acting(actor: Actor) -> Iterator[Actor]:
    token = _current.set(actor)
    try:
        yield actor
    finally:
        _current.reset(token)


def set_api_key(prefix: str) -> None:
    """Called by API-key authentication; a no-op outside a request that installed an actor."""
    actor = _current.get()
    if actor is not None:
        actor.api_key_prefix = prefix
