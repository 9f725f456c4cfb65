"""Install the request's actor for audit events, and record admin changelist actions (no signal exists for them)."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse

from aigc_saas.audit.context import Actor, acting
from aigc_saas.middleware import HybridMiddleware


class AuditActor(HybridMiddleware):
    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        with acting(Actor(user=getattr(request, "user", None))):
            response = self.get_response(request)
            if _is_admin_action(request, response):
                _record(request)
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        # The actor is a context variable: set here, it reaches the sync view through asgiref's copied context.
        with acting(Actor(user=getattr(request, "user", None))):
            response = await self.get_response(request)
            if _is_admin_action(request, response):
                await sync_to_async(_record)(request)  # reads the form and writes the event: database work
        return response


def _is_admin_action(request: HttpRequest, response: HttpResponse) -> bool:
    match = getattr(request, "resolver_match", None)
    is_admin = match is not None and match.namespace == "admin"
    return is_admin and request.method == "POST" and response.status_code < 400


def _record(request: HttpRequest) -> None:
    if request.POST.get("action"):
        from aigc_saas.audit.receivers import record_admin_action

        record_admin_action(request)
