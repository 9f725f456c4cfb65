"""Structured outputs: JSON found in chatty text, near-JSON repaired, and a clear failure naming what is wrong."""

from __future__ import annotations

import pytest

from scenarios.core.structured import StructuredOutputInvalid, parse_structured

SCHEMA = {
    "type": "object",
    "required": ["title", "meta_description"],
    "properties": {"title": {"type": "string", "maxLength": 60}, "meta_description": {"type": "string"}},
}


@pytest.mark.parametrize(
    "text",
    [
        '{"title": "Dog grooming Manchester", "meta_description": "Full grooms."}',
        'Sure! Here it is:\n```json\n{"title": "Dog grooming Manchester", "meta_description": "Full grooms."}\n```\nEnjoy.',
        "{'title': 'Dog grooming Manchester', 'meta_description': 'Full grooms.',}",
        '{title: "Dog grooming Manchester", meta_description: "Full grooms.", extra: None}',
        "\u201ctitle\u201d cut: {\u201ctitle\u201d: \u201cDog grooming Manchester\u201d, \u201cmeta_description\u201d: \u201cFull grooms.\u201d}",
        '[1, 2] then {"title": "Dog grooming Manchester", "meta_description": "Full grooms."',
    ],
    ids=[
        "plain",
        "fenced-with-prose",
        "single-quotes-trailing-comma",
        "bare-keys-python-literal",
        "smart-quotes",
        "truncated",
    ],
)
def test_json_is_found_and_repaired(text: str) -> None:
    data = parse_structured(text, SCHEMA)
    assert data["title"] == "Dog grooming Manchester"
    assert data["meta_description"] == "Full grooms."


def test_text_without_json_fails_naming_that_there_is_none() -> None:
    with pytest.raises(StructuredOutputInvalid, match="no JSON object or array"):
        parse_structured("I am sorry, I cannot do that.", SCHEMA)


def test_json_that_breaks_the_schema_fails_naming_the_field() -> None:
    with pytest.raises(StructuredOutputInvalid) as failed:
        parse_structured('{"title": "' + "x" * 80 + '"}', SCHEMA)
    assert "`result.title`" in failed.value.message
    assert "'meta_description' is a required property" in failed.value.message


def test_json_that_cannot_be_repaired_fails_saying_so() -> None:
    with pytest.raises(StructuredOutputInvalid, match="does not parse, even after repair"):
        parse_structured('{"title": "a" "b" :: }', SCHEMA)


def test_an_unpaired_surrogate_the_model_wrote_becomes_a_replacement_character() -> None:
    """`\\ud9de` is valid JSON syntax but no character: PostgreSQL's jsonb refuses it, so a run storing it failed."""
    text = '{"title": "Dog \\ud9de grooming", "meta_description": "Full \\ud83d\\ude00 grooms."}'
    data = parse_structured(text, SCHEMA)
    assert data["title"] == "Dog \ufffd grooming"
    assert data["meta_description"] == "Full \U0001f600 grooms."  # a real pair stays the character it encodes
