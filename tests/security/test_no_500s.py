"""Inputs that once gave a 500 give a 4xx with a code; error bodies stay small whatever the input."""

from __future__ import annotations

import json

import pytest

from aigc_saas.validation import json_depth, nul_character_paths

pytestmark = pytest.mark.django_db

TEMPLATE = {
    "scenario": "marketing",
    "slug": "safe-schema",
    "title": "Schema",
    "generator": "transformers-text",
    "prompts": {"prompt": "Describe {{ dish }}."},
    "variables": [{"name": "dish", "type": "string", "description": "The dish."}],
    "sample_variables": {"dish": "soup"},
}


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def post(client, url: str, body: str):  # noqa: ANN001, ANN201
    return client.post(url, data=body, content_type="application/json")


def error(response) -> dict:  # noqa: ANN001
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    body = response.json()["error"]
    assert body["code"] and body["message"]
    return body


@pytest.mark.parametrize("depth", [65, 600, 5000, 100_000])
def test_deeply_nested_json_is_a_400(acme, depth: int) -> None:
    for url in ("/api/v1/jobs", "/api/v1/templates"):
        body = error(post(acme, url, nested(depth)))
        assert body["fields"][0] == {"field": "body", "code": "too_deep", "message": body["fields"][0]["message"]}
        assert "nests deeper than 64 levels" in body["message"]


def test_deeply_nested_arrays_inside_params_are_a_400(acme) -> None:
    params = "[" * 600 + "]" * 600
    body = error(post(acme, "/api/v1/jobs", f'{{"generator": "transformers-text", "params": {{"stop": {params}}}}}'))
    assert body["fields"][0]["code"] == "too_deep"


def test_the_walks_are_iterative() -> None:
    deep: object = "x\x00"
    for _ in range(50_000):
        deep = [deep]
    assert json_depth(deep) == 65  # stops counting past the limit
    assert nul_character_paths(deep, "params") == ["params" + ".0" * 50_000]
    assert nul_character_paths({"a\x00": 1, "b": ["ok", "no\x00"]}, "") == ["", "b.1"]


@pytest.mark.parametrize(
    "url, field",
    [
        ("/api/v1/jobs?generator=a%00b", "generator"),
        ("/api/v1/jobs?state=%00", "state"),
        ("/api/v1/jobs?x%00=1", "x\\u0000"),
        ("/api/v1/generators/text%00", "path"),
        ("/api/v1/generators/%00", "path"),
        ("/api/v1/runs?state=%00", "state"),
    ],
)
def test_nul_in_query_or_path_is_a_400_naming_it(acme, url: str, field: str) -> None:
    body = error(acme.get(url))
    assert body["code"] == "null_character"
    assert body["fields"][0]["field"] == field


def test_a_megabyte_of_unknown_params_gives_a_small_error(acme) -> None:
    params = {f"unknown_param_{i}": "v" * 40 for i in range(13_000)}
    payload = json.dumps({"generator": "transformers-text", "params": {"prompt": "hi", **params}})
    assert len(payload) > 800_000

    response = post(acme, "/api/v1/jobs", payload)

    body = error(response)
    assert len(response.content) < 32_000, len(response.content)
    assert len(body["fields"]) <= 21
    assert body["fields"][-1]["code"] == "more_errors"


def test_long_echoed_values_are_clipped(acme) -> None:
    response = post(acme, "/api/v1/jobs", json.dumps({"generator": "x" * 900_000, "params": {}}))
    body = error(response)
    assert len(response.content) < 8_000
    assert all(len(f["message"]) <= 500 for f in body["fields"])


@pytest.mark.parametrize(
    "schema, words",
    [
        ({"$ref": "http://127.0.0.1:9/x.json"}, "not a local reference"),
        ({"$ref": "file:///etc/passwd"}, "not a local reference"),
        ({"type": "string", "pattern": "(a)\\1"}, "backreferences"),
        (json.loads(nested(40).replace('"a"', '"not"').replace("1", "{}", 1)), "nested deeper than 32"),
    ],
)
def test_unsafe_output_schemas_are_refused_at_save(acme, catalogue, schema, words: str) -> None:  # noqa: ANN001
    body = error(post(acme, "/api/v1/templates", json.dumps({**TEMPLATE, "output_schema": schema})))
    assert body["code"] == "schema_rejected"
    assert words in body["message"]
    assert body["fields"][0]["field"] == "output_schema"


def test_an_output_schema_nested_600_deep_is_a_400(acme, catalogue) -> None:  # noqa: ANN001
    schema = nested(600).replace('"a"', '"not"')
    body = error(post(acme, "/api/v1/templates", f'{{"output_schema": {schema}, "title": "x"}}'))
    assert body["fields"][0]["code"] == "too_deep"


@pytest.mark.parametrize(
    "source",
    [
        "{% macro f(x) %}{{ f(x) }}{% endmacro %}{{ f(dish) }}",
        "{{ 'x'|center(400000000) }}{{ dish }}",
        "{% for a in dish * 20 %}{% for b in dish * 20 %}{% for c in dish * 20 %}.{% endfor %}{% endfor %}{% endfor %}",
    ],
)
def test_hostile_templates_are_a_400_at_save(acme, catalogue, source: str) -> None:  # noqa: ANN001
    body = error(post(acme, "/api/v1/templates", json.dumps({**TEMPLATE, "prompts": {"prompt": source}})))
    assert body["code"] == "template_unsafe"
    assert body["fields"][0]["field"] == "prompts.prompt"


@pytest.mark.parametrize("where", ["prompt", "key"])
def test_an_unpaired_surrogate_in_a_body_is_a_400_naming_it(acme, where: str) -> None:
    """Valid JSON syntax (`\\ud800`) that is no character: PostgreSQL's jsonb would refuse it with a 500."""
    params = {"prompt": "a \ud800 b"} if where == "prompt" else {"prompt": "x", "odd\udfff": 1}
    body = error(post(acme, "/api/v1/jobs", json.dumps({"generator": "transformers-text", "params": params})))
    assert body["fields"][0]["code"] == "unpaired_surrogate", body
    assert body["fields"][0]["field"] == ("params.prompt" if where == "prompt" else "params")
    assert "surrogate" in body["message"]
