"""Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the statuses its SDKs map to
exception classes (400 BadRequestError, 401 AuthenticationError, 403 PermissionDeniedError, 404 NotFoundError,
409 ConflictError, 422 UnprocessableEntityError, 429 RateLimitError, 5xx InternalServerError)."""

from __future__ import annotations

import math
import re
from typing import Any

from django.http import JsonResponse
from pydantic import ValidationError
from rest_framework import exceptions

from aigc_saas.errors import ServiceError

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
    504: "timeout_error",
}


class OpenAIError(Exception):
    """An error answered in OpenAI's shape; `param` names the request field at fault."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    @property
    def body_type(self) -> str:
        return TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")

    def response(self) -> JsonResponse:
        body = {
            "error": {
                "message": self.message,
                "type": self.body_type,
                "param": self.param,
                "code": self.code,
            }
        }
        response = JsonResponse(body, status=self.status)
        for name, value in self.headers.items():
            response[name] = value
        return response


def from_validation(exc: ValidationError) -> OpenAIError:
    """The first pydantic error, naming its field the way the client wrote it (`messages[0].role`)."""
    error = exc.errors()[0]
    param = ""
    for part in error["loc"]:
        if isinstance(part, int):
            param += f"[{part}]"
        elif not (isinstance(part, str) and part.startswith(("function-", "tagged-union", "literal["))):
            param += f".{part}" if param else str(part)
    message = error["msg"].removeprefix("Value error, ")
    if not param and (named := re.match(r"`([^`]+)`", message)):
        return OpenAIError(400, message, param=named.group(1), code="invalid_value")  # a check across fields
    return OpenAIError(400, f"`{param}`: {message}" if param else message, param=param or None, code="invalid_value")


def from_service(exc: ServiceError, params: dict[str, str] | None = None) -> OpenAIError:
    """A platform service error; `params` maps the job's param names back to the OpenAI request's."""
    param = None
    field = exc.fields[0].get("field") if exc.fields else None
    if field:
        name = field.removeprefix("params.").split(".")[0].split("[")[0]
        param = (params or {}).get(name, name)
    message = exc.message
    if param and field and field.startswith("params."):
        message = f"`{param}`: {message.split(': ', 1)[-1]}" if message.startswith("`params.") else message
    headers = {}
    wait = getattr(exc, "retry_after", None)
    if exc.status == 429:
        headers["Retry-After"] = str(max(1, math.ceil(wait or 1)))
    return OpenAIError(exc.status, message, param=param, code=exc.code, headers=headers)


def from_drf(exc: Exception) -> OpenAIError:
    """DRF's authentication, permission and throttle refusals."""
    if isinstance(exc, ServiceError):
        return from_service(exc)
    if isinstance(exc, exceptions.APIException):
        status = exc.status_code
        detail: Any = exc.detail
        message = str(detail if not isinstance(detail, dict) else detail.get("detail", detail))
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else None
        headers = {}
        if isinstance(exc, exceptions.Throttled):
            headers["Retry-After"] = str(max(1, math.ceil(exc.wait or 1)))
        if status == 401 or isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            status, code = 401, code or "invalid_api_key"
        return OpenAIError(status, message, code=code, headers=headers)
    raise exc
