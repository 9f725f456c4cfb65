"""OpenAPI: the error answers every API-key operation can give, documented where they can happen.

These come from layers in front of the views (authentication, the body parser, the NUL and size checks,
pagination), so no single view's `extend_schema` sees them: 401 (no or wrong key), 400 (NUL in the path or
query, JSON nested too deep or malformed, bad params), 404 (an id or page that is not there) and, where a body
is read, 413 (too large). Clients and schemathesis then see every status the server really answers.
"""

from __future__ import annotations

from typing import Any

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
ANSWERS = {
    "400": "Bad input, named in `error.fields` (`invalid_request`, `null_character`, `too_deep`, …)",
    "401": "`not_authenticated` or `invalid_api_key`",
    "404": "`not_found`: no such object for this tenant, or a page past the end",
}
BODY_ANSWERS = {"413": "`payload_too_large`"}


ANNOTATIONS = {"description", "readOnly", "writeOnly", "title", "default", "examples"}


def _collapse_nullable_any(node: Any) -> None:
    """`oneOf: [{}, {type: null}]` (how drf-spectacular writes a nullable JSONField in OAS 3.1) fails for null,
    which matches both branches; "any value" already includes null, so keep just the first branch."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        branches = item.get("oneOf")
        if isinstance(branches, list) and len(branches) == 2 and {"type": "null"} in branches:
            other = next(b for b in branches if b != {"type": "null"})
            if isinstance(other, dict) and not (set(other) - ANNOTATIONS):
                del item["oneOf"]
                item.update(other)
        stack.extend(item.values())


# OpenAPI links, so clients and stateful testers can follow a job from its creation to its artifacts:
# (operation, status) → {link name: (target operation, {parameter: runtime expression})}.
LINKS = {
    ("jobs_create", "202"): {
        "GetJob": ("jobs_retrieve", {"job_id": "$response.body#/id"}),
        "CancelJob": ("jobs_cancel_create", {"job_id": "$response.body#/id"}),
    },
    ("jobs_create", "200"): {  # a submission that waited for its job (`?wait=`)
        "GetJob": ("jobs_retrieve", {"job_id": "$response.body#/id"}),
        "GetFirstArtifact": (
            "jobs_artifacts_content_retrieve",
            {"job_id": "$response.body#/id", "artifact_id": "$response.body#/artifacts/0/id"},
        ),
    },
    ("jobs_list", "200"): {"GetFirstJob": ("jobs_retrieve", {"job_id": "$response.body#/results/0/id"})},
    ("jobs_retrieve", "200"): {
        "GetFirstArtifact": (
            "jobs_artifacts_content_retrieve",
            {"job_id": "$request.path.job_id", "artifact_id": "$response.body#/artifacts/0/id"},
        )
    },
}


def _add_links(result: dict[str, Any]) -> None:
    operations = {
        op.get("operationId"): op
        for item in result.get("paths", {}).values()
        for op in item.values()
        if isinstance(op, dict)
    }
    for (source, status), links in LINKS.items():
        response = operations.get(source, {}).get("responses", {}).get(status)
        if response is None:
            continue
        for name, (target, parameters) in links.items():
            if target in operations:
                response.setdefault("links", {})[name] = {"operationId": target, "parameters": parameters}


# What file-content endpoints (artifacts, uploaded assets) really send: the stored file's own type.
FILE_MEDIA_TYPES = ("image/png", "image/jpeg", "image/webp", "audio/wav", "audio/flac", "audio/mpeg", "audio/ogg")


def _file_media_types(result: dict[str, Any]) -> None:
    for path, item in result.get("paths", {}).items():
        if not path.endswith("/content"):
            continue
        for operation in item.values():
            ok = operation.get("responses", {}).get("200", {}) if isinstance(operation, dict) else {}
            content = ok.get("content", {})
            if set(content) == {"application/octet-stream"}:
                for media in FILE_MEDIA_TYPES:
                    content.setdefault(media, content["application/octet-stream"])


def document_errors(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"])."""
    _collapse_nullable_any(result.get("components", {}))
    _add_links(result)
    _file_media_types(result)
    if "ErrorBody" not in result.get("components", {}).get("schemas", {}):
        return result
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            if not any("ApiKey" in requirement for requirement in operation.get("security", [])):
                continue  # the schema and docs pages take no key
            answers = {**ANSWERS, **(BODY_ANSWERS if "requestBody" in operation else {})}
            for status, description in answers.items():
                operation["responses"].setdefault(
                    status, {"content": {"application/json": {"schema": ERROR_REF}}, "description": description}
                )
    return result
