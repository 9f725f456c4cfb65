"""OpenAPI: every API-key operation can answer 403 `insufficient_scope` and 429 `rate_limited` (with its headers)."""

from __future__ import annotations

from typing import Any

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
RATE_HEADERS = {
    "Retry-After": "Seconds to wait before retrying.",
    "X-RateLimit-Limit": "Size of the bucket that refused the request.",
    "X-RateLimit-Remaining": "Requests (or submissions) left in it: 0.",
    "X-RateLimit-Reset": "Seconds until that bucket is full again.",
}


def document_limits(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"])."""
    if "ErrorBody" not in result.get("components", {}).get("schemas", {}):
        return result
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            if not any("ApiKey" in requirement for requirement in operation.get("security", [])):
                continue  # the schema and docs pages take no key
            responses = operation["responses"]
            responses.setdefault(
                "403",
                {"content": {"application/json": {"schema": ERROR_REF}}, "description": "`insufficient_scope`"},
            )
            limited = responses.setdefault(
                "429",
                {"content": {"application/json": {"schema": ERROR_REF}}, "description": "`rate_limited`"},
            )
            limited.setdefault("headers", {}).update(
                {
                    name: {"schema": {"type": "integer"}, "description": text}
                    for name, text in RATE_HEADERS.items()
                    if name not in limited["headers"]
                }
            )
    return result
