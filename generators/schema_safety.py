"""JSON Schemas written by tenants: checked before they are stored, validated without reaching out.

A tenant schema is untrusted input that the shared worker (and the web process) evaluates. The default
jsonschema registry fetches remote `$ref`s with urlopen (SSRF, `file:` disclosure) and `pattern` runs on
Python's backtracking `re` (`^(a+)+$` grows 4x per character). So:

- `check_untrusted_schema` refuses what we will not evaluate: non-local `$ref`/`$dynamicRef`, oversized or
  deeply nested schemas, patterns RE2 cannot compile (backreferences, lookaround: the constructs that need
  backtracking).
- `validator_for` builds a validator whose registry never retrieves anything and whose `pattern`,
  `patternProperties` and `additionalProperties` matching runs on RE2 (linear time, bounded memory).

Django-free on purpose: the grammar compiler in `generators/` uses it too.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import re2
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import SchemaError, ValidationError
from jsonschema.protocols import Validator
from referencing import Registry
from referencing.exceptions import NoSuchResource

MAX_SCHEMA_BYTES = 64 * 1024
MAX_SCHEMA_DEPTH = 32  # nesting of objects/arrays in the schema document itself
MAX_PATTERN_LENGTH = 1000
MAX_PATTERNS = 200
RE2_MAX_MEM = 8 << 20  # bytes RE2 may use for one compiled program
REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
NAME_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
DATA_KEYWORDS = ("const", "enum", "default", "examples", "dependentRequired", "required")
KNOWN_DIALECTS = {
    "https://json-schema.org/draft/2020-12/schema",
    "https://json-schema.org/draft/2020-12/schema#",
    "http://json-schema.org/draft-07/schema",
    "http://json-schema.org/draft-07/schema#",
}


class SchemaRejected(ValueError):
    """The schema is refused; the message is one sentence naming the problem and where it is."""


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # a refused pattern is a user error, not something for the worker's stderr
    options.max_mem = RE2_MAX_MEM
    return options


@lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> Any:
    """The RE2 program for `pattern`; raises `re2.error` for what RE2 refuses (lookaround, backreferences)."""
    return re2.compile(pattern, _options())


def _where(path: list[str | int]) -> str:
    return "/" + "/".join(str(part) for part in path) if path else "the top level"


def _check_pattern(pattern: Any, path: list[str | int]) -> None:
    if not isinstance(pattern, str):
        raise SchemaRejected(f"the pattern at {_where(path)} must be a string")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise SchemaRejected(f"the pattern at {_where(path)} is longer than {MAX_PATTERN_LENGTH} characters")
    try:
        compile_pattern(pattern)
    except Exception as exc:  # re2.error; message is bytes or str depending on the build
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise SchemaRejected(
            f"the pattern {pattern[:80]!r} at {_where(path)} is not supported ({reason}); backreferences and "
            "lookaround are refused because they need a backtracking regex engine"
        ) from None


def _walk(schema: Any) -> tuple[int, bool, bool]:
    """Check every node iteratively (a recursive walk would itself overflow on hostile nesting).

    Returns (pattern count, uses patternProperties, uses unevaluatedProperties).
    """
    # (node, path, is_schema): maps of names (`properties`, `$defs`) and data (`const`, `enum`) are walked for
    # depth but their keys and values are not keywords.
    stack: list[tuple[Any, list[str | int], bool]] = [(schema, [], True)]
    patterns = 0
    has_pattern_properties = has_unevaluated = False
    while stack:
        node, path, is_schema = stack.pop()
        if len(path) > MAX_SCHEMA_DEPTH:
            raise SchemaRejected(f"the schema is nested deeper than {MAX_SCHEMA_DEPTH} levels (at {_where(path[:8])}…)")
        if isinstance(node, list):
            stack.extend((item, [*path, index], is_schema) for index, item in enumerate(node))
            continue
        if not isinstance(node, dict):
            continue
        if not is_schema:
            stack.extend((value, [*path, key], False) for key, value in node.items())
            continue
        for keyword in REF_KEYWORDS:
            ref = node.get(keyword)
            if ref is not None and (not isinstance(ref, str) or not ref.startswith("#")):
                raise SchemaRejected(
                    f"`{keyword}` {str(ref)[:120]!r} at {_where(path)} is not a local reference; only references "
                    "inside the schema (starting with '#') are allowed, nothing is fetched"
                )
        dialect = node.get("$schema")
        if dialect is not None and dialect not in KNOWN_DIALECTS:
            raise SchemaRejected(f"`$schema` {str(dialect)[:120]!r} at {_where(path)} is not a supported dialect")
        if "pattern" in node:
            patterns += 1
            _check_pattern(node["pattern"], [*path, "pattern"])
        pattern_properties = node.get("patternProperties")
        if isinstance(pattern_properties, dict):
            has_pattern_properties = True
            for key in pattern_properties:
                patterns += 1
                _check_pattern(key, [*path, "patternProperties", key])
        has_unevaluated = has_unevaluated or "unevaluatedProperties" in node
        if patterns > MAX_PATTERNS:
            raise SchemaRejected(f"the schema has more than {MAX_PATTERNS} patterns")
        for key, value in node.items():
            if key in NAME_MAPS and isinstance(value, dict):
                # a map from names to subschemas: each value is a schema, the map itself is not
                stack.extend((sub, [*path, key, name], True) for name, sub in value.items())
            else:
                stack.append((value, [*path, key], key not in DATA_KEYWORDS))
    return patterns, has_pattern_properties, has_unevaluated


def check_untrusted_schema(schema: Any) -> None:
    """Raise `SchemaRejected` unless `schema` is a JSON Schema we are willing to store and evaluate."""
    if not isinstance(schema, (dict, bool)):
        raise SchemaRejected("the schema must be a JSON object (or a boolean)")
    _, has_pattern_properties, has_unevaluated = _walk(schema)  # depth first: json.dumps recurses too
    size = len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_SCHEMA_BYTES:
        raise SchemaRejected(f"the schema is {size} bytes; at most {MAX_SCHEMA_BYTES} are allowed")
    if has_pattern_properties and has_unevaluated:
        # jsonschema matches patternProperties for unevaluatedProperties with Python's `re`; rather than
        # re-implement that keyword, refuse the combination.
        raise SchemaRejected("`unevaluatedProperties` cannot be combined with `patternProperties`")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise SchemaRejected(f"not a valid JSON Schema: {exc.message[:300]}") from None
    except RecursionError:
        raise SchemaRejected("the schema is too deeply nested to check") from None


def _re2_search(pattern: str, text: str) -> bool:
    return compile_pattern(pattern).search(text) is not None


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    if validator.is_type(instance, "string") and not _re2_search(pattern, instance):
        yield ValidationError(f"{instance[:200]!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, pattern_properties: dict, instance: Any, schema: Any) -> Any:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        for key, value in instance.items():
            if _re2_search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, additional: Any, instance: Any, schema: Any) -> Any:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = [
        key for key in instance if key not in properties and not any(_re2_search(pattern, key) for pattern in patterns)
    ]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        listed = ", ".join(repr(each) for each in sorted(extras, key=str)[:20])
        yield ValidationError(f"Additional properties are not allowed ({listed} unexpected)")


def _never_retrieve(uri: str) -> Any:
    raise NoSuchResource(ref=uri)  # nothing outside the schema is ever fetched, whatever the URI says


SafeValidator = validators.extend(
    Draft202012Validator,
    {
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
    },
)
NO_RETRIEVAL = Registry(retrieve=_never_retrieve)


def validator_for(schema: Any) -> Validator:
    """A Draft 2020-12 validator for an (already checked) tenant schema: no retrieval, RE2 patterns."""
    check_untrusted_schema(schema)
    return SafeValidator(schema, registry=NO_RETRIEVAL)
