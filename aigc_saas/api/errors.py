"""Every API error body: {"error": {"code", "message", "fields": [{field, code, message}]}}."""

from __future__ import annotations

from typing import Any

from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from aigc_saas.errors import ServiceError
from generators.errors import GeneratorError

DRF_CODES = {
    exceptions.ParseError: "malformed_json",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "invalid_api_key",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.Throttled: "rate_limited",
}


# Error bodies are bounded whatever the input: a 1 MB body of unknown params once echoed a 9.6 MB error.
MAX_ERROR_FIELDS = 20
MAX_FIELD_MESSAGE_CHARS = 500
MAX_MESSAGE_CHARS = 2000


def _clip(text: Any, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else f"{text[: limit - 30]}… ({len(text) - limit + 30} more characters)"


def error_body(code: str, message: str, fields: list[dict[str, str]] | None = None) -> dict[str, Any]:
    fields = fields or []
    kept = [
        {key: _clip(value, MAX_FIELD_MESSAGE_CHARS if key == "message" else 200) for key, value in field.items()}
        for field in fields[:MAX_ERROR_FIELDS]
    ]
    if len(fields) > MAX_ERROR_FIELDS:
        extra = len(fields) - MAX_ERROR_FIELDS
        kept.append({"field": "body", "code": "more_errors", "message": f"and {extra} more errors, not listed"})
        message = "; ".join(f["message"] for f in kept) if len(message) > MAX_MESSAGE_CHARS else message
    return {"error": {"code": _clip(code, 100), "message": _clip(message, MAX_MESSAGE_CHARS), "fields": kept}}


def _flatten(detail: Any, prefix: str = "") -> list[dict[str, str]]:
    if isinstance(detail, dict):
        return [f for key, value in detail.items() for f in _flatten(value, f"{prefix}{key}.")]
    if isinstance(detail, list):
        if all(isinstance(d, exceptions.ErrorDetail) for d in detail):
            name = prefix.rstrip(".") or "body"
            return [{"field": name, "code": d.code, "message": f"`{name}`: {d}"} for d in detail]
        return [f for i, value in enumerate(detail) for f in _flatten(value, f"{prefix}{i}.")]
    name = prefix.rstrip(".") or "body"
    return [{"field": name, "code": getattr(detail, "code", "invalid"), "message": f"`{name}`: {detail}"}]


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ServiceError):
        return Response(error_body(exc.code, exc.message, exc.fields), status=exc.status)
    if isinstance(exc, GeneratorError):
        return Response(error_body(exc.code, exc.message), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten(exc.detail)
        message = "; ".join(f["message"] for f in fields[:MAX_ERROR_FIELDS])
        response.data = error_body("invalid_request", message, fields)
        return response
    code = next((c for cls, c in DRF_CODES.items() if isinstance(exc, cls)), None)
    detail = getattr(exc, "detail", str(exc))
    if isinstance(exc, exceptions.AuthenticationFailed) and getattr(detail, "code", "") != "authentication_failed":
        code = detail.code
    if isinstance(exc, exceptions.ParseError):
        detail = f"`body`: the request body is not valid JSON ({detail})"
    response.data = error_body(code or getattr(detail, "code", "error"), str(detail))
    return response


def json_error(status_code: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(error_body(code, message), status=status_code)
