"""The seeded catalogue: useful coverage per scenario, every template renders its samples, loading is idempotent."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from aigc_saas.plugins.services import registry
from scenarios.core.catalogue import default_directory, load_catalogue, read_catalogue, template_entries
from scenarios.core.models import Recipe, Template, TemplateVersion
from scenarios.core.recipes import check_recipe
from scenarios.core.templates import check_content, render_params

ENTRIES = template_entries(read_catalogue())


@pytest.mark.parametrize("scenario", ["marketing", "ecommerce", "education"])
def test_each_scenario_has_eight_templates_across_text_image_and_audio_and_a_recipe(scenario: str) -> None:
    generators = [entry["generator"] for s, entry, _ in ENTRIES if s == scenario]
    modalities = Counter(str(registry().get(g).cls.modality) for g in generators)
    recipes = [r for d in read_catalogue() if d["scenario"] == scenario for r in d.get("recipes", [])]

    assert len(generators) >= 8
    assert set(modalities) == {"text", "image", "audio"}
    assert recipes


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("scenario", "entry"), [(s, e) for s, e, _ in ENTRIES], ids=[f"{s}/{e['slug']}" for s, e, _ in ENTRIES]
)
def test_every_seeded_template_renders_its_sample_variables_into_valid_params(scenario: str, entry: dict) -> None:
    content = check_content({k: v for k, v in entry.items() if k != "slug"})
    version = TemplateVersion(**content)

    params = render_params(version, content["sample_variables"], {})

    for param in content["prompts"]:
        assert params[param].strip()
        assert "{{" not in params[param] and "{%" not in params[param]


@pytest.mark.django_db
def test_every_seeded_recipe_is_consistent_with_its_templates(catalogue) -> None:  # noqa: ANN001
    for recipe in Recipe.objects.all():
        check_recipe(
            {
                "scenario": recipe.scenario,
                "slug": recipe.slug,
                "title": recipe.title,
                "variables": recipe.variables,
                "steps": recipe.steps,
                "sample_variables": recipe.sample_variables,
            }
        )
    assert Recipe.objects.count() >= 3


@pytest.mark.django_db
def test_loading_twice_changes_nothing(catalogue) -> None:  # noqa: ANN001
    versions = TemplateVersion.objects.count()

    report = load_catalogue()

    assert not report.changed
    assert TemplateVersion.objects.count() == versions
    assert set(Template.objects.values_list("latest_version", flat=True)) == {1}


@pytest.mark.django_db
def test_an_edited_seed_becomes_a_new_version_and_the_old_one_stays(catalogue, tmp_path: Path) -> None:  # noqa: ANN001
    folder = tmp_path / "catalogue"
    shutil.copytree(default_directory(), folder)
    path = folder / "marketing.toml"
    path.write_text(path.read_text().replace('title = "Ad copy (AIDA)"', 'title = "Ad copy (AIDA framework)"'))

    report = load_catalogue(folder)

    assert report.updated == ["marketing/ad-copy-aida v2"]
    template = Template.objects.get(scenario="marketing", slug="ad-copy-aida", tenant=None)
    assert template.latest_version == 2
    assert list(template.versions.order_by("version").values_list("title", flat=True)) == [
        "Ad copy (AIDA)",
        "Ad copy (AIDA framework)",
    ]
