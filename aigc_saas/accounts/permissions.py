"""API key scopes: each view says which scope each HTTP method needs (`required_scopes`)."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission

from aigc_saas.errors import ServiceError


class InsufficientScope(ServiceError):
    status = 403
    code = "insufficient_scope"


def required_scope(view: Any, method: str) -> str:
    """`required_scopes = {"GET": "read", "POST": "submit"}` on the view; reads need `read`, writes `submit` by default."""
    declared: dict[str, str] = getattr(view, "required_scopes", None) or {}
    if method in declared:
        return declared[method]
    if method in SAFE_METHODS:
        return declared.get("GET", "read")
    return "submit"


class HasScope(BasePermission):
    def has_permission(self, request: Any, view: Any) -> bool:
        key = getattr(getattr(request, "user", None), "api_key", None)
        if key is None:
            return True  # not an API-key caller: IsAuthenticated (listed first) decides
        needed = required_scope(view, request.method)
        if needed not in (key.scopes or []):
            raise InsufficientScope(
                f"`scopes`: this API key lacks the `{needed}` scope needed to {request.method} this endpoint "
                f"(it has {', '.join(key.scopes) or 'none'})",
                fields=[{"field": "scopes", "code": "insufficient_scope", "message": f"missing `{needed}`"}],
            )
        return True
