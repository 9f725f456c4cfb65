"""The OpenAPI schema tells clients about scopes and rate limits on every operation that takes a key."""

from __future__ import annotations

from drf_spectacular.generators import SchemaGenerator


def test_every_key_operation_documents_403_and_429_with_the_rate_limit_headers() -> None:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    operations = [
        (path, method, op)
        for path, item in schema["paths"].items()
        for method, op in item.items()
        if isinstance(op, dict) and "responses" in op
    ]
    keyed = [(p, m, op) for p, m, op in operations if any("ApiKey" in s for s in op.get("security", []))]

    assert len(keyed) >= 20
    for path, method, op in keyed:
        assert "403" in op["responses"], (path, method)
        limited = op["responses"]["429"]
        body = "OpenAIErrorBody" if path.startswith("/v1/") else "ErrorBody"  # /v1 answers in OpenAI's shape
        assert limited["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{body}"}
        assert {"Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(
            limited["headers"]
        ), (path, method)
    assert "/api/v1/usage" in schema["paths"]
