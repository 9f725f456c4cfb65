"""Template services: check content, create, edit (a new version), look up per tenant, render a version to params."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aigc_saas.accounts.models import Tenant
from aigc_saas.errors import Conflict, InvalidInput, NotFound, ServiceError
from aigc_saas.plugins.services import registry
from generators.errors import ParamsInvalid
from scenarios.core.models import Template, TemplateVersion
from scenarios.core.registry import get_scenario
from scenarios.core.rendering import check_source, render
from scenarios.core.structured import check_schema, format_instruction
from scenarios.core.variables import parse_specs, validate_variables

# Params a run may override when the template does not narrow them: sampling and size, never the rendered prompt.
DEFAULT_OVERRIDES = {
    "text": ["seed", "temperature", "top_p", "max_new_tokens"],
    "image": ["seed", "steps", "width", "height", "guidance_scale", "num_images", "scheduler"],
    "audio": ["seed", "speaking_rate", "speaker_id", "format"],
}


class Forbidden(ServiceError):
    status = 403
    code = "permission_denied"


class TemplateContent(BaseModel):
    """Everything a version holds; what a tenant sends and what the seeds declare."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    generator: str = Field(min_length=1, max_length=64)
    prompts: dict[str, str] = Field(min_length=1, description="Generator param → Jinja template.")
    variables: list[dict[str, Any]] = Field(default_factory=list, max_length=30)
    default_params: dict[str, Any] = Field(default_factory=dict)
    allowed_overrides: list[str] | None = None
    output_schema: dict[str, Any] | None = None
    sample_variables: dict[str, Any] = Field(default_factory=dict)


def _invalid(field: str, message: str, code: str = "invalid_template") -> InvalidInput:
    return InvalidInput(
        f"`{field}`: {message}", code=code, fields=[{"field": field, "code": code, "message": f"`{field}`: {message}"}]
    )


def check_content(raw: dict[str, Any]) -> dict[str, Any]:
    """Validated, normalised content: the prompts compile, the samples render into params the generator accepts."""
    try:
        content = TemplateContent.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        raise _invalid(".".join(str(p) for p in err["loc"]) or "body", err["msg"]) from None
    if content.generator not in registry():
        raise _invalid("generator", f"no generator named {content.generator!r} is installed", "unknown_generator")
    cls = registry().get(content.generator).cls
    modality = str(cls.modality)
    fields = set(cls.Params.model_fields)
    specs = parse_specs(content.variables)
    names = {s.name for s in specs}
    for param, source in content.prompts.items():
        if param not in fields:
            raise _invalid(f"prompts.{param}", f"{content.generator!r} has no param {param!r}; it has {sorted(fields)}")
        check_source(source, names, field=f"prompts.{param}")
    free = fields - set(content.prompts)
    for param in content.default_params:
        if param not in free:
            raise _invalid(f"default_params.{param}", f"not a param of {content.generator!r} a template may set")
    overrides = content.allowed_overrides
    if overrides is None:
        overrides = [p for p in DEFAULT_OVERRIDES.get(modality, []) if p in free]
    for param in overrides:
        if param not in free:
            raise _invalid("allowed_overrides", f"{param!r} is not a param of {content.generator!r} a run may set")
    if content.output_schema is not None:
        check_schema(content.output_schema)
        if modality != "text" or "prompt" not in content.prompts:
            raise _invalid("output_schema", "structured output needs a text generator and a `prompt` template")
    data = content.model_dump()
    data["allowed_overrides"] = overrides
    data["variables"] = [s.model_dump(exclude_none=True) for s in specs]
    data["sample_variables"] = validate_variables(
        data["variables"], content.sample_variables, prefix="sample_variables"
    )
    version = TemplateVersion(**data)
    render_params(version, data["sample_variables"], {})
    return data


def content_hash(content: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def render_params(version: TemplateVersion, variables: dict[str, Any], overrides: Any) -> dict[str, Any]:
    """Validated variables → the generator's params; overrides outside `allowed_overrides` are refused."""
    if not isinstance(overrides, dict):
        raise _invalid("params", "must be a JSON object", "invalid_params")
    for name in overrides:
        if name not in version.allowed_overrides:
            raise _invalid(
                f"params.{name}",
                f"not a param this template lets a run set; allowed: {version.allowed_overrides}",
                "param_not_overridable",
            )
    params = {**version.default_params, **overrides}
    for param, source in version.prompts.items():
        params[param] = render(source, variables, field=f"prompts.{param}")
    cls = registry().get(version.generator).cls
    if version.output_schema is not None:
        # The instruction tells the model what the fields mean; a generator that constrains its decoding to the
        # schema makes the output valid by construction, the others get a repair pass after the fact (runs.py).
        params["prompt"] = f"{params['prompt']}\n\n{format_instruction(version.output_schema)}"
        if constrains_output(cls):
            params["response_format"] = {"type": "json_schema", "schema": version.output_schema}
    try:
        cls.validate_params(params)
    except ParamsInvalid as exc:
        fields = [{**e, "field": f"params.{e['field']}", "message": f"`params.{e['message'][1:]}"} for e in exc.errors]
        raise InvalidInput("; ".join(f["message"] for f in fields), code="invalid_params", fields=fields) from None
    return params


def constrains_output(cls: Any) -> bool:
    """Whether a generator plugin accepts `response_format` (grammar-constrained JSON output)."""
    return "response_format" in getattr(getattr(cls, "Params", None), "model_fields", {})


def visible_templates(tenant: Tenant | None) -> QuerySet[Template]:
    """Global templates and this tenant's own; never another tenant's."""
    owner = Q(tenant__isnull=True) | Q(tenant=tenant) if tenant else Q(tenant__isnull=True)
    return Template.objects.filter(owner, is_active=True)


def get_template(tenant: Tenant, template_id: Any) -> Template:
    template = visible_templates(tenant).filter(pk=template_id).first()
    if template is None:
        raise NotFound(f"`template_id`: no template {template_id}", code="template_not_found")
    return template


def get_version(template: Template, version: int | None = None) -> TemplateVersion:
    found = template.versions.filter(version=version or template.latest_version).first()
    if found is None:
        raise _invalid(
            "version", f"template {template.slug!r} has no version {version}; latest is {template.latest_version}"
        )
    return found


@transaction.atomic
def create_template(
    tenant: Tenant | None, scenario: str, slug: str, content: dict[str, Any], *, created_by: str = ""
) -> Template:
    get_scenario(scenario)
    clean = check_content(content)
    if Template.objects.filter(tenant=tenant, scenario=scenario, slug=slug).exists():
        raise Conflict(f"`slug`: a template {scenario}/{slug} already exists", code="template_exists")
    template = Template.objects.create(tenant=tenant, scenario=scenario, slug=slug)
    _add_version(template, clean, created_by)
    return template


@transaction.atomic
def edit_template(template: Template, content: dict[str, Any], *, created_by: str = "") -> TemplateVersion:
    """A new version when the content changed; the latest version when it did not (editing twice is harmless)."""
    template = Template.objects.select_for_update().get(pk=template.pk)
    clean = check_content(content)
    latest = template.versions.filter(version=template.latest_version).first()
    if latest is not None and latest.content_hash == content_hash(clean):
        return latest
    return _add_version(template, clean, created_by)


def edit_tenant_template(tenant: Tenant, template: Template, changes: dict[str, Any]) -> TemplateVersion:
    if template.tenant_id != tenant.pk:
        raise Forbidden(f"`template_id`: {template.scenario}/{template.slug} is global and read-only")
    return edit_template(template, {**version_content(template.latest), **changes}, created_by="api")


def version_content(version: TemplateVersion) -> dict[str, Any]:
    return {name: getattr(version, name) for name in TemplateContent.model_fields}


def _add_version(template: Template, clean: dict[str, Any], created_by: str) -> TemplateVersion:
    number = template.latest_version + 1
    version = TemplateVersion.objects.create(
        template=template, version=number, content_hash=content_hash(clean), created_by=created_by, **clean
    )
    Template.objects.filter(pk=template.pk).update(latest_version=number)
    template.latest_version = number
    return version
