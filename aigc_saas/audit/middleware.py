"""Install the request's actor for audit events, and record admin changelist actions (no signal exists for them)."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from aigc_saas.audit.context import Actor, acting


class AuditActor:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with acting(Actor(user=getattr(request, "user", None))):
            response = self.get_response(request)
            match = getattr(request, "resolver_match", None)
            is_admin = match is not None and match.namespace == "admin"
            if is_admin and request.method == "POST" and request.POST.get("action") and response.status_code < 400:
                from aigc_saas.audit.receivers import record_admin_action

                record_admin_action(request)
        return response
