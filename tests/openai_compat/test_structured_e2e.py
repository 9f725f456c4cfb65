"""Structured outputs through the whole stack on the tiny random-weight model: noise in, schema-valid JSON out.

The seeded templates with an `output_schema` (runs through the scenario API) and a chat call with a strict
JSON schema (through the official client) decode under their grammar in the worker's engine.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from generators.schema_safety import validator_for
from tests.grammar.conftest import seeded_template

pytestmark = pytest.mark.django_db(transaction=True)

RUNS = 20
VARIABLES = {
    "product-listing": {"product": "oak chopping board 40 cm", "brand": "Woodly"},
    "quiz": {"topic": "photosynthesis"},
    "flashcards": {"topic": "Spanish verbs"},
}
STRICT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "rating", "tags"],
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "rating": {"type": "integer", "minimum": 1, "maximum": 5},
        "tags": {"type": "array", "items": {"enum": ["fresh", "local", "vegan"]}, "minItems": 1, "maxItems": 3},
    },
}


def _valid(data: object, schema: dict) -> list[str]:
    return [error.message for error in validator_for(schema).iter_errors(data)]


@pytest.mark.parametrize("slug", ["product-listing", "quiz", "flashcards"])
def test_seeded_structured_templates_return_valid_json_20_of_20(v1_server, worker, catalogue, tenant_key, slug) -> None:  # noqa: ANN001
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {tenant_key[1]}"
    base = f"{v1_server.url}/api/v1"
    scenario = "ecommerce" if slug == "product-listing" else "education"
    listed = session.get(f"{base}/scenarios/{scenario}/templates", params={"page_size": 100}, timeout=30).json()
    url = next(t["url"] for t in listed["results"] if t["slug"] == slug)

    runs = []
    for _ in range(RUNS):
        started = session.post(f"{url}/runs", json={"variables": VARIABLES[slug]}, timeout=30)
        assert started.status_code == 202, started.text
        runs.append(started.json())
    deadline = time.monotonic() + 600
    finished = []
    for run in runs:
        while (current := session.get(run["url"], timeout=30).json())["state"] == "running":
            assert time.monotonic() < deadline, current
            time.sleep(0.5)
        finished.append(current)

    schema = seeded_template(slug)["output_schema"]
    assert [r["state"] for r in finished] == ["succeeded"] * RUNS, [r.get("error") for r in finished]
    assert [_valid(r["result"]["data"], schema) for r in finished] == [[]] * RUNS
    assert all(r["steps"][0]["repair_job"] is None for r in finished)  # valid by construction, never repaired


def test_chat_with_a_strict_json_schema_returns_valid_json_20_of_20(client) -> None:  # noqa: ANN001
    contents = []
    for _ in range(RUNS // 5):
        answer = client.chat.completions.create(
            model="transformers-text",
            messages=[{"role": "user", "content": "Rate this bakery."}],
            max_tokens=128,
            n=5,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "rating", "strict": True, "schema": STRICT},
            },
        )
        assert [c.finish_reason for c in answer.choices] == ["stop"] * 5
        contents += [c.message.content for c in answer.choices]

    assert [_valid(json.loads(text), STRICT) for text in contents] == [[]] * RUNS


def test_a_budget_too_small_for_the_schema_is_a_clear_bad_request(client) -> None:  # noqa: ANN001
    import openai

    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="transformers-text",
            messages=[{"role": "user", "content": "x"}],
            max_completion_tokens=3,
            response_format={"type": "json_schema", "json_schema": {"name": "rating", "schema": STRICT}},
        )

    assert caught.value.code == "structured_output_truncated"
    assert caught.value.param == "max_completion_tokens"
