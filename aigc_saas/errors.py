"""Errors that services raise; the API turns each into its HTTP status with `code` and `message`."""

from __future__ import annotations


class ServiceError(Exception):
    status = 400
    code = "invalid_request"

    def __init__(self, message: str, *, code: str | None = None, fields: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or []
        if code:
            self.code = code


class InvalidInput(ServiceError):
    status = 400
    code = "invalid_params"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class QuotaExceeded(ServiceError):
    status = 429
    code = "quota_exceeded"


class Unavailable(ServiceError):
    status = 503
    code = "unavailable"
