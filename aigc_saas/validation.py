"""Input checks shared by the API and the services.

Walks are iterative: a hostile body nested hundreds deep must give a 400, not a RecursionError (a 500).
"""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Any

from django.http import HttpRequest

NUL_MESSAGE = "contains a NUL character (\\u0000), which cannot be stored"
MAX_JSON_DEPTH = 64  # no API body needs more; the output_schema check allows 32 levels of schema
MAX_REPORTED_PATHS = 20


SURROGATE_MESSAGE = "contains an unpaired UTF-16 surrogate (\\ud800-\\udfff), which is not a character"
NUL = re.compile("\x00")
LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # after JSON decoding, a valid pair is one character already
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def nul_character_paths(value: Any, path: str, pattern: re.Pattern[str] = NUL) -> list[str]:
    """Where a JSON value holds a NUL character (in a key or a string), which PostgreSQL cannot store in text or
    jsonb (or, with `pattern=LONE_SURROGATE`, an unpaired surrogate, which jsonb refuses too); at most
    `MAX_REPORTED_PATHS` paths, in document order."""
    found: list[str] = []
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack and len(found) < MAX_REPORTED_PATHS:
        item, where = stack.pop()
        if isinstance(item, str):
            if pattern.search(item):
                found.append(where)
        elif isinstance(item, dict):
            children = []
            for key, child in item.items():
                if isinstance(key, str) and pattern.search(key):
                    found.append(where)
                children.append((child, f"{where}.{key}" if where else str(key)))
            stack.extend(reversed(children))
        elif isinstance(item, list):
            stack.extend(reversed([(child, f"{where}.{i}" if where else str(i)) for i, child in enumerate(item)]))
    return found


def unstorable_paths(value: Any, path: str) -> tuple[str, str, list[str]]:
    """(code, message, paths) for what a JSON value holds that cannot be stored: NUL characters first, then
    unpaired surrogates; ("", "", []) when nothing. One walk for the common clean value."""
    if not nul_character_paths(value, path, UNSTORABLE):
        return "", "", []
    for pattern, code, message in ((NUL, "null_character", NUL_MESSAGE),
                                   (LONE_SURROGATE, "unpaired_surrogate", SURROGATE_MESSAGE)):  # fmt: skip
        if paths := nul_character_paths(value, path, pattern):
            return code, message, paths
    return "", "", []


def storable(value: Any) -> Any:
    """Model output made storable: NUL characters and unpaired surrogates (a model can write `\\ud9de` inside
    JSON it was asked for) become U+FFFD, in keys and strings at any depth."""
    if isinstance(value, str):
        return UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable(item) for item in value]
    return value


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """How deeply objects and arrays nest in `value` (a scalar is 0); stops counting once past `limit`."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth + 1)
            if deepest > limit:
                return deepest
            stack.extend((child, depth + 1) for child in item if isinstance(child, (dict, list)))
    return deepest


def nul_in_request(request: HttpRequest) -> str | None:
    if "\x00" in request.path:
        return "path"
    for key, values in request.GET.lists():
        if "\x00" in key or any("\x00" in value for value in values):
            return key.replace("\x00", "\\u0000")[:100]
    return None


# ---- no server paths in API output ------------------------------------------------------------------------

MODEL_KEYS = {"model_id", "default_model", "model"}
# An absolute path of two or more parts, not part of a URL ("https://host/a/b") or a word ("and/or").
_SERVER_PATH = re.compile(r"(?<![\w.:/~-])(?:/[\w.@+-]+){2,}/?")


def is_local_path(value: str) -> bool:
    """A model id that names a folder on the server rather than a Hub id (`org/name`)."""
    return (
        value.startswith(("/", "~", "./", "../", "file:"))
        or "\\" in value
        or value.count("/") > 1
        or re.match(r"^[A-Za-z]:", value) is not None
    )


def public_model_id(value: Any) -> Any:
    """Hub ids as they are; a local model folder as `local:<folder name>`, never its full path."""
    if isinstance(value, str) and value and is_local_path(value):
        name = PurePath(value.replace("\\", "/").rstrip("/")).name or "model"
        return f"local:{name}"
    return value


def scrub_paths(text: Any) -> Any:
    """A message with every absolute server path cut to its last part (`…/name`)."""
    if not isinstance(text, str) or "/" not in text:
        return text
    return _SERVER_PATH.sub(lambda m: f"…/{PurePath(m.group(0).rstrip('/')).name}", text)


def scrub_model_ids(value: Any, depth: int = 0) -> Any:
    """A copy of a result (dicts and lists) whose `model_id` / `default_model` / `model` strings are public."""
    if depth > 8:
        return value
    if isinstance(value, dict):
        return {
            k: public_model_id(v) if k in MODEL_KEYS and isinstance(v, str) else scrub_model_ids(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [scrub_model_ids(v, depth + 1) for v in value]
    return value
