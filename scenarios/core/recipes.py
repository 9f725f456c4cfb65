"""Recipe services: check a definition against the global templates it chains, save it as a new version on change."""

from __future__ import annotations

import re
from typing import Any

from django.db import transaction
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aigc_saas.errors import InvalidInput, NotFound
from scenarios.core.models import Recipe, Template
from scenarios.core.registry import get_scenario
from scenarios.core.rendering import check_source
from scenarios.core.templates import content_hash
from scenarios.core.variables import parse_specs, validate_variables

STEP_REFERENCE = re.compile(r"\bsteps\.([a-z][a-z0-9_]*)")


class RecipeStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    template: str = Field(pattern=r"^[a-z0-9_-]+/[a-z0-9_-]+$", description="`scenario/slug` of a global template.")
    variables: dict[str, str] = Field(
        default_factory=dict, description="Template variable → Jinja over `inputs` and earlier `steps`."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Param overrides for this step.")


class RecipeDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scenario: str
    slug: str = Field(pattern=r"^[a-z0-9-]{1,80}$")
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    variables: list[dict[str, Any]] = Field(default_factory=list)
    steps: list[RecipeStep] = Field(min_length=1, max_length=10)
    sample_variables: dict[str, Any] = Field(default_factory=dict)


def step_template(reference: str) -> Template:
    scenario, slug = reference.split("/", 1)
    template = Template.objects.filter(tenant__isnull=True, scenario=scenario, slug=slug, is_active=True).first()
    if template is None:
        raise NotFound(f"`template`: no global template {reference!r}", code="template_not_found")
    return template


def check_recipe(raw: dict[str, Any]) -> dict[str, Any]:
    """Step names unique, templates exist, every required variable mapped, references only to earlier steps."""
    try:
        recipe = RecipeDefinition.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in err["loc"])
        raise InvalidInput(f"`{field}`: {err['msg']}", code="invalid_recipe") from None
    get_scenario(recipe.scenario)
    specs = [s.model_dump(exclude_none=True) for s in parse_specs(recipe.variables)]
    sample = validate_variables(specs, recipe.sample_variables, prefix="sample_variables")
    seen: list[str] = []
    for index, step in enumerate(recipe.steps):
        where = f"steps.{index}"
        if hasattr(dict, step.name):
            # `steps.<name>` in Jinja finds the dict method before the key: `steps.copy` would be dict.copy
            raise InvalidInput(f"`{where}.name`: {step.name!r} is reserved (a dict method name)", code="invalid_recipe")
        if step.name in seen:
            raise InvalidInput(f"`{where}.name`: {step.name!r} is used twice", code="invalid_recipe")
        version = step_template(step.template).latest
        declared = {v["name"]: v for v in version.variables}
        for name, source in step.variables.items():
            if name not in declared:
                raise InvalidInput(
                    f"`{where}.variables.{name}`: {step.template} has no such variable; it has {sorted(declared)}",
                    code="invalid_recipe",
                )
            check_source(source, {"inputs", "steps"}, field=f"{where}.variables.{name}")
            for ref in STEP_REFERENCE.findall(source):
                if ref not in seen:
                    raise InvalidInput(
                        f"`{where}.variables.{name}`: refers to step {ref!r}, which does not run before it",
                        code="invalid_recipe",
                    )
        missing = [n for n, v in declared.items() if v.get("required", True) and "default" not in v]
        missing = [n for n in missing if n not in step.variables]
        if missing:
            raise InvalidInput(f"`{where}.variables`: {step.template} needs {missing}", code="invalid_recipe")
        seen.append(step.name)
    data = recipe.model_dump()
    data["variables"], data["sample_variables"] = specs, sample
    return data


@transaction.atomic
def save_recipe(raw: dict[str, Any]) -> tuple[Recipe, bool]:
    """Create, or bump the version when the definition changed; returns (recipe, changed)."""
    data = check_recipe(raw)
    digest = content_hash(data)
    fields = {k: data[k] for k in ("scenario", "title", "description", "variables", "steps", "sample_variables")}
    recipe = Recipe.objects.select_for_update().filter(slug=data["slug"]).first()
    if recipe is None:
        return Recipe.objects.create(slug=data["slug"], content_hash=digest, **fields), True
    if recipe.content_hash == digest:
        return recipe, False
    Recipe.objects.filter(pk=recipe.pk).update(content_hash=digest, version=recipe.version + 1, **fields)
    recipe.refresh_from_db()
    return recipe, True


def get_recipe(slug: str) -> Recipe:
    recipe = Recipe.objects.filter(slug=slug, is_active=True).first()
    if recipe is None:
        raise NotFound(f"`slug`: no recipe {slug!r}", code="recipe_not_found")
    return recipe
