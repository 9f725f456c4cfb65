"""Grammar-constrained decoding on the tiny random-weight model: noise in, schema-valid JSON out."""

from __future__ import annotations

import json
import time

import pytest

from generators.grammar import ResponseFormatInvalid, compile_constraint, mask_logits_batch
from generators.schema_safety import validator_for
from tests.grammar.conftest import seeded_template

ROWS = 20
STRICT_CHAT_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["sku", "status", "price", "dimensions", "tags"],
    "properties": {
        "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
        "status": {"enum": ["draft", "active", "archived"]},
        "price": {"type": "number", "minimum": 0, "maximum": 10000},
        "dimensions": {
            "type": "object",
            "additionalProperties": False,
            "required": ["width_cm", "height_cm"],
            "properties": {
                "width_cm": {"type": "integer", "minimum": 1, "maximum": 500},
                "height_cm": {"type": "integer"},
            },
        },
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "minItems": 2, "maxItems": 4},
        "note": {"type": ["string", "null"]},
    },
}


def _invalid(rows: list[dict], schema: dict) -> list[str]:
    validator = validator_for(schema)
    problems = []
    for row in rows:
        try:
            data = json.loads(row["text"])
        except ValueError as exc:
            problems.append(f"not JSON ({exc}): {row['text'][-80:]!r}")
            continue
        problems += [f"{error.message} at {list(error.absolute_path)}" for error in validator.iter_errors(data)]
    return problems


@pytest.mark.parametrize("slug", ["product-listing", "quiz", "flashcards"])
def test_seeded_template_output_validates_20_of_20_within_its_default_budget(tiny, slug) -> None:  # noqa: ANN001
    template = seeded_template(slug)
    schema, budget = template["output_schema"], template["default_params"]["max_new_tokens"]
    constraints = [
        compile_constraint(
            tiny.tokenizer, {"type": "json_schema", "schema": schema}, tiny.vocab_size, max_tokens=budget
        )
        for _ in range(ROWS)
    ]

    rows = tiny.sample(constraints, budget, seed=11)

    assert all(row["finished"] for row in rows), [len(row["tokens"]) for row in rows]
    assert _invalid(rows, schema) == []


def test_strict_chat_schema_with_enum_pattern_nesting_and_array_bounds_validates_20_of_20(tiny) -> None:  # noqa: ANN001
    fmt = {"type": "json_schema", "schema": STRICT_CHAT_SCHEMA}
    constraints = [compile_constraint(tiny.tokenizer, fmt, tiny.vocab_size, max_tokens=256) for _ in range(ROWS)]

    rows = tiny.sample(constraints, 256, seed=5)

    assert all(row["finished"] for row in rows)
    assert _invalid(rows, STRICT_CHAT_SCHEMA) == []
    assert {json.loads(row["text"])["status"] for row in rows} <= {"draft", "active", "archived"}


def test_json_object_gives_a_json_object_every_time(tiny) -> None:  # noqa: ANN001
    constraints = [
        compile_constraint(tiny.tokenizer, {"type": "json_object"}, tiny.vocab_size, max_tokens=128)
        for _ in range(ROWS)
    ]

    rows = tiny.sample(constraints, 128, seed=3)

    assert all(row["finished"] for row in rows)
    assert all(isinstance(json.loads(row["text"]), dict) for row in rows)


def test_a_budget_too_small_for_the_schema_leaves_the_output_unfinished(tiny) -> None:  # noqa: ANN001
    # The engine fails such a row with `structured_output_truncated`; the grammar must not claim it finished.
    schema = seeded_template("quiz")["output_schema"]
    constraint = compile_constraint(
        tiny.tokenizer, {"type": "json_schema", "schema": schema}, tiny.vocab_size, max_tokens=6
    )

    (row,) = tiny.sample([constraint], 6)

    assert not row["finished"]
    assert len(row["tokens"]) == 6


def test_without_a_budget_nothing_steers_and_the_mask_is_the_grammar_alone(tiny) -> None:  # noqa: ANN001
    fmt = {"type": "json_schema", "schema": STRICT_CHAT_SCHEMA}
    plain = compile_constraint(tiny.tokenizer, fmt, tiny.vocab_size)
    logits = tiny.torch.zeros(tiny.vocab_size)

    plain.mask_logits(logits)

    allowed = [tiny.tokenizer.decode([i]) for i in tiny.torch.nonzero(tiny.torch.isfinite(logits)).flatten().tolist()]
    assert allowed and all('{"sku": "'.startswith(text) for text in allowed)


def test_batch_masking_equals_masking_each_row(tiny) -> None:  # noqa: ANN001
    torch = tiny.torch
    schema = seeded_template("flashcards")["output_schema"]
    fmt = {"type": "json_schema", "schema": schema}
    constraints = [compile_constraint(tiny.tokenizer, fmt, tiny.vocab_size, max_tokens=40) for _ in range(4)]
    tiny.sample(constraints[:2], 12, seed=1)  # two rows advanced (one into wrap-up), two at the start
    logits = torch.randn(5, tiny.vocab_size)  # row 4 has no constraint and stays as it is
    each = logits.clone()

    mask_logits_batch([*constraints, None], logits)
    for i, constraint in enumerate(constraints):
        constraint.mask_logits(each[i])

    assert torch.equal(logits, each)


def test_untrusted_schemas_pass_the_hardening_rules_before_compiling(tiny) -> None:  # noqa: ANN001
    remote = {"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}}
    backtracking = {"type": "string", "pattern": "^(a+)+\\1$"}

    for schema, named in ((remote, "$ref"), (backtracking, "pattern")):
        with pytest.raises(ResponseFormatInvalid) as caught:
            compile_constraint(tiny.tokenizer, {"type": "json_schema", "schema": schema}, tiny.vocab_size)
        assert caught.value.code == "invalid_response_format"
        assert named in caught.value.message


@pytest.mark.parametrize("fmt", [{"type": "text"}, {"type": "json_schema"}, {"type": "json_schema", "schema": []}])
def test_a_response_format_it_cannot_constrain_to_is_refused_naming_the_field(tiny, fmt) -> None:  # noqa: ANN001
    with pytest.raises(ResponseFormatInvalid, match="`response_format"):
        compile_constraint(tiny.tokenizer, fmt, tiny.vocab_size)


def test_a_schema_compiles_once_per_tokenizer(tiny) -> None:  # noqa: ANN001
    schema = {**STRICT_CHAT_SCHEMA, "title": f"cache probe {time.time()}"}  # a schema no other test compiled
    fmt = {"type": "json_schema", "schema": schema}

    started = time.perf_counter()
    first = compile_constraint(tiny.tokenizer, fmt, tiny.vocab_size)
    cold = time.perf_counter() - started
    started = time.perf_counter()
    second = compile_constraint(tiny.tokenizer, fmt, tiny.vocab_size)
    warm = time.perf_counter() - started

    assert first.matcher is not second.matcher  # each row gets its own state ...
    assert first._compiled is second._compiled  # ... over one compiled grammar
    assert warm < cold


def test_logits_made_in_inference_mode_are_masked_outside_it(tiny) -> None:  # noqa: ANN001
    # The engine computes logits under torch.inference_mode() and masks them after the block.
    torch = tiny.torch
    with torch.inference_mode():
        logits = torch.zeros(2, tiny.vocab_size)
    fmt = {"type": "json_schema", "schema": STRICT_CHAT_SCHEMA}
    constraints = [compile_constraint(tiny.tokenizer, fmt, tiny.vocab_size, max_tokens=1) for _ in range(2)]

    constraints[0].mask_logits(logits[0])
    mask_logits_batch([None, constraints[1]], logits)

    assert torch.equal(torch.isfinite(logits[0]), torch.isfinite(logits[1]))
    assert 0 < int(torch.isfinite(logits[0]).sum()) < tiny.vocab_size
