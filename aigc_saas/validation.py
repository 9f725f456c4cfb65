"""Input checks shared by the API and the services."""

from __future__ import annotations

from typing import Any

NUL_MESSAGE = "contains a NUL character (\\u0000), which cannot be stored"


def nul_character_paths(value: Any, path: str) -> list[str]:
    """Where a JSON value holds a NUL character, which PostgreSQL cannot store in text or jsonb."""
    if isinstance(value, str):
        return [path] if "\x00" in value else []
    if isinstance(value, dict):
        return [
            found
            for key, item in value.items()
            for found in nul_character_paths(key, path) + nul_character_paths(item, f"{path}.{key}" if path else key)
        ]
    if isinstance(value, list):
        return [
            found
            for i, item in enumerate(value)
            for found in nul_character_paths(item, f"{path}.{i}" if path else str(i))
        ]
    return []
