"""JSON bodies: NUL characters, unpaired surrogates and hostile nesting are refused up front, naming the field, on every endpoint."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.parsers import JSONParser

from aigc_saas.validation import MAX_JSON_DEPTH, json_depth, unstorable_paths


class StrictJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:  # the C decoder gives up around 1,000 levels
            raise exceptions.ValidationError(
                {"body": [exceptions.ErrorDetail(f"nests deeper than {MAX_JSON_DEPTH} levels", code="too_deep")]}
            ) from None
        if json_depth(data) > MAX_JSON_DEPTH:
            # Every later step (serializers, pydantic, jsonschema, the renderer) recurses; stop here.
            raise exceptions.ValidationError(
                {"body": [exceptions.ErrorDetail(f"nests deeper than {MAX_JSON_DEPTH} levels", code="too_deep")]}
            )
        code, message, paths = unstorable_paths(data, "")
        if paths:
            raise exceptions.ValidationError(
                {path or "body": [exceptions.ErrorDetail(message, code=code)] for path in paths}
            )
        return data
