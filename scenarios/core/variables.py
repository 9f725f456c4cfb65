"""Typed template variables: each spec becomes a pydantic field, so validation and JSON Schema come from one place."""

from __future__ import annotations

import functools
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from aigc_saas.errors import InvalidInput

VariableType = Literal["string", "text", "integer", "number", "boolean", "choice", "list", "image", "audio"]
# `image` / `audio`: an uploaded asset's or a finished job's artifact's id; submit_job checks it is the tenant's.
ASSET_ID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
# Upper bounds when a spec gives none: a variable is never an unbounded string.
DEFAULT_MAX_LENGTH = {"string": 300, "text": 4000}


class VariableSpec(BaseModel):
    """One variable of a template or recipe, as written in the seeds or sent by a tenant."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$", description="Used as `{{ name }}` in the prompt.")
    type: VariableType = "string"
    description: str = Field(min_length=1, max_length=500)
    required: bool = True
    default: Any = None
    choices: list[str] | None = Field(default=None, min_length=1, max_length=50)
    min_length: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=1, le=8000)
    minimum: float | None = None
    maximum: float | None = None
    max_items: int | None = Field(default=None, ge=1, le=100)
    example: Any = None

    @model_validator(mode="after")
    def _consistent(self) -> VariableSpec:
        if self.type == "choice" and not self.choices:
            raise ValueError(f"`{self.name}`: a `choice` variable needs `choices`")
        if self.choices and self.type not in ("choice", "list"):
            raise ValueError(f"`{self.name}`: `choices` only apply to `choice` and `list` variables")
        if self.default is not None:
            _validate_one(self, self.default, f"{self.name}.default")
        return self


def _annotation(spec: VariableSpec) -> Any:
    if spec.type in ("string", "text"):
        return Annotated[
            str,
            Field(
                min_length=spec.min_length if spec.min_length is not None else (1 if spec.required else 0),
                max_length=spec.max_length or DEFAULT_MAX_LENGTH[spec.type],
            ),
        ]
    if spec.type in ("image", "audio"):
        extra = {"format": "aigc-asset-id", "x-aigc-asset": {"kind": spec.type}}
        return Annotated[str, Field(min_length=36, max_length=36, pattern=ASSET_ID_PATTERN, json_schema_extra=extra)]
    if spec.type == "integer":
        return Annotated[int, Field(strict=True, ge=spec.minimum, le=spec.maximum)]
    if spec.type == "number":
        return Annotated[float, Field(ge=spec.minimum, le=spec.maximum)]
    if spec.type == "boolean":
        return Annotated[bool, Field(strict=True)]
    if spec.type == "choice":
        return Literal[tuple(spec.choices)]  # type: ignore[misc]
    item = Literal[tuple(spec.choices)] if spec.choices else Annotated[str, Field(min_length=1, max_length=300)]  # type: ignore[misc]
    return Annotated[list[item], Field(min_length=spec.min_length or 0, max_length=spec.max_items or 20)]


def _field(spec: VariableSpec) -> tuple[Any, Any]:
    annotation = _annotation(spec)
    if spec.default is not None:
        return annotation, Field(default=spec.default, description=spec.description)
    if not spec.required:
        return annotation | None, Field(default=None, description=spec.description)
    return annotation, Field(description=spec.description, examples=[spec.example] if spec.example else None)


def _validate_one(spec: VariableSpec, value: Any, label: str) -> None:
    model = create_model(
        "One", __config__=ConfigDict(extra="forbid"), value=_field(spec.model_copy(update={"default": None}))
    )
    try:
        model.model_validate({"value": value})
    except ValidationError as exc:
        raise ValueError(f"`{label}`: {exc.errors(include_url=False)[0]['msg']} (got {value!r})") from None


def parse_specs(raw: Any, *, where: str = "variables") -> list[VariableSpec]:
    """Variable specs from JSON, or a 400 naming the bad spec."""
    if not isinstance(raw, list):
        raise InvalidInput(f"`{where}` must be a list of variable specs", code="invalid_template")
    specs = []
    for index, item in enumerate(raw):
        try:
            specs.append(VariableSpec.model_validate(item))
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            loc = ".".join(str(p) for p in err["loc"])
            field = f"{where}.{index}" + (f".{loc}" if loc else "")
            raise InvalidInput(
                f"`{field}`: {err['msg']}",
                code="invalid_template",
                fields=[{"field": field, "code": err["type"], "message": f"`{field}`: {err['msg']}"}],
            ) from None
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise InvalidInput(f"`{where}`: variable names must be unique, got {names}", code="invalid_template")
    return specs


@functools.lru_cache(maxsize=512)
def _model(specs_json: str) -> type[BaseModel]:
    specs = [VariableSpec.model_validate(s) for s in json.loads(specs_json)]
    fields = {s.name: _field(s) for s in specs}
    return create_model("Variables", __config__=ConfigDict(extra="forbid"), **fields)


def variables_model(specs: list[dict[str, Any]]) -> type[BaseModel]:
    return _model(json.dumps(specs, sort_keys=True))


def validate_variables(specs: list[dict[str, Any]], values: Any, *, prefix: str = "variables") -> dict[str, Any]:
    """Values checked against the specs, defaults filled in; a 400 naming each bad variable otherwise."""
    if not isinstance(values, dict):
        raise InvalidInput(
            f"`{prefix}` must be a JSON object",
            fields=[{"field": prefix, "code": "type", "message": f"`{prefix}` must be a JSON object"}],
        )
    try:
        return variables_model(specs).model_validate(values).model_dump(mode="json")
    except ValidationError as exc:
        fields = []
        for err in exc.errors(include_url=False):
            loc = ".".join(str(p) for p in err["loc"])
            field = f"{prefix}.{loc}"
            message = f"`{field}`: {err['msg']}"
            if err["type"] == "extra_forbidden":
                message = f"`{field}`: unknown variable; this template takes {[s['name'] for s in specs]}"
            elif "input" in err and err["type"] != "missing":
                message += f" (got {err['input']!r})"
            fields.append({"field": field, "code": err["type"], "message": message})
        raise InvalidInput("; ".join(f["message"] for f in fields), code="invalid_variables", fields=fields) from None


def variables_json_schema(specs: list[dict[str, Any]]) -> dict[str, Any]:
    schema = variables_model(specs).model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return schema
