"""Refuse oversized API bodies before anything reads them."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from aigc_saas.api.errors import json_error

UPLOAD_FORM_OVERHEAD = 64 * 1024  # multipart boundaries and part headers around an upload


class ApiBodySizeLimit:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/api/"):
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
        return self.get_response(request)
