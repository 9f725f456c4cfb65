"""Structured outputs: find the JSON in a model's text, repair the usual slips, validate against the schema."""

from __future__ import annotations

import json
import re
from typing import Any

from aigc_saas.errors import InvalidInput
from aigc_saas.validation import storable
from generators.schema_safety import SchemaRejected, check_untrusted_schema, validator_for

FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
SMART_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})
TRAILING_COMMA = re.compile(r",\s*([}\]])")
UNQUOTED_KEY = re.compile(r"([{,]\s*)([A-Za-z_][A-Za-z0-9_\-]*)(\s*:)")
LINE_COMMENT = re.compile(r"^\s*//.*$", re.MULTILINE)
PY_LITERALS = {"True": "true", "False": "false", "None": "null"}


class StructuredOutputInvalid(Exception):
    """The text holds no JSON that matches the schema; `message` says what did not parse or validate."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def check_schema(schema: Any, *, field: str = "output_schema") -> None:
    """Refuse at save what we will not evaluate: remote/file `$ref`, oversize or deep schemas, non-RE2 patterns."""
    if not isinstance(schema, dict):
        raise InvalidInput(f"`{field}` must be a JSON Schema object", code="invalid_template")
    try:
        check_untrusted_schema(schema)
    except SchemaRejected as exc:
        message = f"`{field}`: {exc}"
        raise InvalidInput(
            message, code="schema_rejected", fields=[{"field": field, "code": "schema_rejected", "message": message}]
        ) from None


def _balanced_spans(text: str) -> list[str]:
    """Every top-level {...} or [...] span, in order, honouring strings (either quote) and escapes."""
    spans, depth, start, quote, escaped = [], 0, None, None, False
    pairs = {"{": "}", "[": "]"}
    stack: list[str] = []
    for i, char in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
            continue
        if char in "\"'" and depth:
            quote = char
        elif char in pairs:
            if depth == 0:
                start = i
            stack.append(pairs[char])
            depth += 1
        elif depth and char == stack[-1]:
            stack.pop()
            depth -= 1
            if depth == 0 and start is not None:
                spans.append(text[start : i + 1])
                start = None
    if depth and start is not None:
        spans.append(text[start:] + "".join(reversed(stack)))  # cut off mid-object: close what was open
    return spans


def _single_to_double_quotes(text: str) -> str:
    out, quote, i = [], None, 0
    while i < len(text):
        char = text[i]
        if char == "\\" and quote and i + 1 < len(text):
            nxt = text[i + 1]
            out.append(nxt if (quote == "'" and nxt == "'") else char + nxt)
            i += 2
            continue
        if quote is None and char in "\"'":
            quote = char
            out.append('"')
        elif char == quote:
            quote = None
            out.append('"')
        elif quote == "'" and char == '"':
            out.append('\\"')
        else:
            out.append(char)
        i += 1
    return "".join(out)


def repair_json(text: str) -> str:
    """Lenient fixes for near-JSON: smart quotes, comments, single quotes, bare keys, Python literals, trailing commas."""
    fixed = text.translate(SMART_QUOTES)
    fixed = LINE_COMMENT.sub("", fixed)
    if "'" in fixed:
        fixed = _single_to_double_quotes(fixed)
    fixed = UNQUOTED_KEY.sub(r'\1"\2"\3', fixed)
    fixed = re.sub(r"(?<=[:\[,\s])(True|False|None)(?=\s*[,}\]])", lambda m: PY_LITERALS[m.group(1)], fixed)
    return TRAILING_COMMA.sub(r"\1", fixed)


def candidates(text: str) -> list[str]:
    fenced = [block.strip() for block in FENCE.findall(text)]
    return [*fenced, *(span for block in [*fenced, text] for span in _balanced_spans(block))]


def parsed_candidates(text: str) -> tuple[list[Any], list[str]]:
    """Every JSON value found in `text` (as is, or after lenient repair), and the raw candidates."""
    found = candidates(text or "")
    values = []
    for candidate in found:
        for attempt in (candidate, repair_json(candidate)):
            try:
                values.append(storable(json.loads(attempt)))  # a model may write `\ud9de`: jsonb refuses that
                break
            except ValueError:
                continue
    return values, found


def extract_json(text: str) -> Any:
    """The first JSON value found in `text`."""
    values, found = parsed_candidates(text)
    if values:
        return values[0]
    preview = (text or "").strip().replace("\n", " ")[:120]
    if not found:
        raise StructuredOutputInvalid(f"no JSON object or array in the model's output (it began {preview!r})")
    raise StructuredOutputInvalid(
        f"the JSON in the model's output does not parse, even after repair: {found[0][:120]!r}"
    )


def _path(error: Any) -> str:
    path = "result"
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _validator(schema: dict[str, Any]) -> Any:
    """The no-retrieval, RE2 validator; a stored schema that no longer passes the checks is never evaluated."""
    try:
        return validator_for(schema)
    except SchemaRejected as exc:
        raise StructuredOutputInvalid(f"the template's schema is refused: {exc}") from None


def validate_output(data: Any, schema: dict[str, Any], validator: Any = None) -> None:
    validator = validator or _validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        described = "; ".join(f"`{_path(e)}`: {e.message}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise StructuredOutputInvalid(f"the JSON does not match the template's schema: {described}{more}")


def parse_structured(text: str, schema: dict[str, Any]) -> Any:
    """Validated JSON from a model's text, or `StructuredOutputInvalid` naming what did not parse or match."""
    values, _ = parsed_candidates(text)
    validator = _validator(schema) if values else None
    first_problem = None
    for data in values:
        try:
            validate_output(data, schema, validator)
            return data
        except StructuredOutputInvalid as exc:
            first_problem = first_problem or exc
    if first_problem:
        raise first_problem
    return extract_json(text)  # raises, naming why nothing parsed


def format_instruction(schema: dict[str, Any]) -> str:
    return (
        "Reply with JSON only: no prose before or after it, no code fences. "
        f"It must match this JSON Schema:\n{json.dumps(schema, separators=(',', ':'))}"
    )


def repair_prompt(text: str, problem: str, schema: dict[str, Any]) -> str:
    return (
        "The text below was supposed to be JSON matching a schema, but " + problem + ".\n"
        "Rewrite it as valid JSON that matches the schema, keeping its content. "
        + format_instruction(schema)
        + "\n\nText:\n"
        + (text or "")[:4000]
    )
