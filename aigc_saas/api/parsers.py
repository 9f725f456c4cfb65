"""JSON bodies with NUL characters are refused up front, naming the field, on every endpoint."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.parsers import JSONParser

from aigc_saas.validation import NUL_MESSAGE, nul_character_paths


class StrictJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        if paths := nul_character_paths(data, ""):
            raise exceptions.ValidationError(
                {path or "body": [exceptions.ErrorDetail(NUL_MESSAGE, code="null_character")] for path in paths}
            )
        return data
