"""OpenAPI: each installed generator's params as a component, so typed inputs (asset ids among them) are documented."""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.hooks import postprocess_schema_enums


def _component_name(generator: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^a-zA-Z0-9]+", generator) if part) + "Params"


def add_generator_params(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: `<Generator>Params` components from each plugin's pydantic model."""
    from aigc_saas.plugins.services import registry

    result = postprocess_schema_enums(result, generator, request=request, public=public)
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    for name, info in sorted(registry().plugins.items()):
        component = _component_name(name)
        schema = info.cls.Params.model_json_schema(ref_template=f"#/components/schemas/{component}{{model}}")
        for def_name, definition in schema.pop("$defs", {}).items():
            schemas[f"{component}{def_name}"] = definition
        schema["description"] = f"`params` of a `{name}` job (POST /jobs with generator={name!r})."
        schemas[component] = schema
    return result
