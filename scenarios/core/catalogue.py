"""Load the template catalogue (TOML files, e.g. seeds/catalogue/*.toml) idempotently: unchanged seeds change nothing,
an edited seed becomes a new version."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from aigc_saas.errors import ServiceError
from scenarios.core.models import Template
from scenarios.core.recipes import save_recipe
from scenarios.core.templates import TemplateContent, create_template, edit_template

TEMPLATE_KEYS = {"slug", *TemplateContent.model_fields}


def default_directory() -> Path:
    return Path(settings.BASE_DIR) / "seeds" / "catalogue"


@dataclass
class LoadReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)


class SeedError(Exception):
    pass


def read_catalogue(directory: Path | None = None) -> list[dict[str, Any]]:
    """Each file: `scenario`, `[[templates]]` and `[[recipes]]`; a JSON Schema may be written as a JSON string."""
    files = sorted((directory or default_directory()).glob("*.toml"))
    if not files:
        raise SeedError(f"no *.toml catalogue files in {directory or default_directory()}")
    documents = []
    for path in files:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
        document["_path"] = str(path)
        for item in document.get("templates", []):
            if isinstance(item.get("output_schema"), str):
                item["output_schema"] = json.loads(item["output_schema"])
        documents.append(document)
    return documents


def template_entries(documents: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], str]]:
    return [(d["scenario"], t, d["_path"]) for d in documents for t in d.get("templates", [])]


def _content(entry: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(entry) - TEMPLATE_KEYS)
    if unknown:
        raise SeedError(f"template {entry.get('slug')!r}: unknown keys {unknown}")
    return {k: v for k, v in entry.items() if k != "slug"}


@transaction.atomic
def load_catalogue(directory: Path | None = None) -> LoadReport:
    """Every template and recipe of the catalogue, all or nothing."""
    documents = read_catalogue(directory)
    report = LoadReport()
    for scenario, entry, path in template_entries(documents):
        name = f"{scenario}/{entry.get('slug')}"
        try:
            existing = Template.objects.filter(tenant__isnull=True, scenario=scenario, slug=entry["slug"]).first()
            if existing is None:
                create_template(None, scenario, entry["slug"], _content(entry), created_by="seeds")
                report.created.append(name)
                continue
            before = existing.latest_version
            version = edit_template(existing, _content(entry), created_by="seeds")
            (report.updated if version.version != before else report.unchanged).append(f"{name} v{version.version}")
        except ServiceError as exc:
            raise SeedError(f"{path}: template {name}: {exc.message}") from None
    for document in documents:
        for entry in document.get("recipes", []):
            name = f"recipe {document['scenario']}/{entry.get('slug')}"
            try:
                recipe, changed = save_recipe({"scenario": document["scenario"], **entry})
            except ServiceError as exc:
                raise SeedError(f"{document['_path']}: {name}: {exc.message}") from None
            if changed:
                (report.created if recipe.version == 1 else report.updated).append(f"{name} v{recipe.version}")
            else:
                report.unchanged.append(f"{name} v{recipe.version}")
    return report
