"""Tenant JSON Schemas: nothing fetched, bounded, and patterns on RE2 (no catastrophic backtracking)."""

from __future__ import annotations

import http.server
import threading
import time

import pytest

from generators.schema_safety import (
    MAX_SCHEMA_BYTES,
    NO_RETRIEVAL,
    SafeValidator,
    SchemaRejected,
    check_untrusted_schema,
    validator_for,
)


@pytest.fixture
def doc_server():
    """A real HTTP server on loopback serving a JSON schema; counts every request it gets."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - stdlib name
            hits.append(self.path)
            body = b'{"type": "string", "const": "SECRET-INTERNAL-DOCUMENT"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


def nested(depth: int, keyword: str = "items") -> dict:
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {keyword: schema}
    return schema


@pytest.mark.parametrize(
    "schema, words",
    [
        ({"$ref": "http://127.0.0.1:8000/x.json"}, "not a local reference"),
        ({"$ref": "https://example.com/s.json#/a"}, "not a local reference"),
        ({"$ref": "file:///etc/passwd"}, "not a local reference"),
        ({"$ref": "other.json"}, "not a local reference"),
        ({"properties": {"a": {"$ref": "//evil.example/x"}}}, "/properties/a"),
        ({"$defs": {"x": {"$dynamicRef": "http://x/y"}}}, "$dynamicRef"),
        ({"items": [{"$ref": 5}]}, "not a local reference"),
        ({"$schema": "http://127.0.0.1/meta"}, "not a supported dialect"),
        ({"type": "string", "pattern": "(a)\\1"}, "backreferences"),
        ({"type": "string", "pattern": "(?=a)a"}, "lookaround"),
        ({"type": "string", "pattern": "(?<!a)b"}, "not supported"),
        ({"patternProperties": {"(?=x)": {}}}, "/patternProperties/(?=x)"),
        ({"type": "string", "pattern": "a" * 1001}, "longer than"),
        ({"type": "string", "pattern": 7}, "must be a string"),
        ({"patternProperties": {"^a": {}}, "unevaluatedProperties": False}, "cannot be combined"),
        (nested(40), "nested deeper than"),
        (nested(600, "not"), "nested deeper than"),
        ({"enum": ["x" * 1000] * 100}, f"at most {MAX_SCHEMA_BYTES}"),
        ({"type": "nonsense"}, "not a valid JSON Schema"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_refused_schemas_name_the_problem(schema, words):
    with pytest.raises(SchemaRejected) as caught:
        check_untrusted_schema(schema)
    assert words in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"pattern": {"type": "string"}, "$ref": {"type": "integer"}}},
        {"$defs": {"n": {"type": "integer"}}, "type": "array", "items": {"$ref": "#/$defs/n"}},
        {"type": "string", "pattern": "^[a-z]{2,5}-\\d+$"},
        {"const": {"$ref": "http://data-not-a-ref"}},
        nested(30),
        True,
    ],
)
def test_accepted_schemas(schema):
    check_untrusted_schema(schema)
    validator_for(schema)


def test_remote_and_file_refs_are_never_fetched_even_unchecked(doc_server, tmp_path):
    base, hits = doc_server
    secret = tmp_path / "secret.json"
    secret.write_text('{"const": "FILE-CONTENT"}')
    for ref in (f"{base}/x.json", secret.as_uri()):
        validator = SafeValidator({"$ref": ref}, registry=NO_RETRIEVAL)  # bypass the save-time check on purpose
        with pytest.raises(Exception) as caught:
            validator.is_valid("x")
        assert "SECRET" not in str(caught.value) and "FILE-CONTENT" not in str(caught.value)
    assert hits == []
    with pytest.raises(SchemaRejected):
        validator_for({"$ref": f"{base}/x.json"})
    assert hits == []


def test_backtracking_pattern_is_linear_on_re2():
    validator = validator_for({"type": "string", "pattern": "^(a+)+$"})
    started = time.perf_counter()
    assert not validator.is_valid("a" * 50_000 + "!")
    assert validator.is_valid("a" * 50_000)
    assert time.perf_counter() - started < 1.0  # Python's re would need longer than the universe here


def test_pattern_properties_and_additional_properties_use_re2():
    schema = {
        "type": "object",
        "properties": {"id": {"type": "integer"}},
        "patternProperties": {"^(x+)+$": {"type": "string"}},
        "additionalProperties": False,
    }
    validator = validator_for(schema)
    started = time.perf_counter()
    key = "x" * 30_000
    assert validator.is_valid({"id": 1, key: "s"})
    errors = [e.message for e in validator.iter_errors({"id": 1, key: 2, key + "!": "s"})]
    assert time.perf_counter() - started < 1.0
    assert any("is not of type 'string'" in m for m in errors)
    assert any("Additional properties are not allowed" in m for m in errors)


def test_local_refs_still_resolve():
    validator = validator_for(
        {"$defs": {"n": {"type": "integer", "minimum": 0}}, "type": "array", "items": {"$ref": "#/$defs/n"}}
    )
    assert validator.is_valid([1, 2])
    assert not validator.is_valid([1, -2])
