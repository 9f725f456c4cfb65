"""Run services with the real job services; the worker's part (claim, finish) is played by the test with fixed text."""

from __future__ import annotations

import pytest

from aigc_saas.errors import InvalidInput
from aigc_saas.jobs import services as jobs
from generators.base import GenerationResult
from scenarios.core import runs
from scenarios.core.models import Recipe, Template
from scenarios.core.templates import render_params

pytestmark = pytest.mark.django_db

SEO = {"page_topic": "Dog grooming in Manchester", "primary_keyword": "dog grooming manchester", "brand": "Happy Paws"}
VALID_SEO = (
    '{"title": "Dog grooming Manchester | Happy Paws", "meta_description": "Full grooms, nail trims and puppy '
    'sessions in Manchester from friendly groomers.", "slug": "dog-grooming-manchester", "focus_keywords": ["dog grooming"]}'
)


def template(scenario: str, slug: str) -> Template:
    return Template.objects.get(tenant=None, scenario=scenario, slug=slug)


def finish(job, text: str) -> None:  # noqa: ANN001
    jobs.finish_job(jobs.claim_job(job.pk, "test-worker"), GenerationResult(text=text))


def current_job(run):  # noqa: ANN001, ANN201
    step = run.steps.filter(state__in=runs.ACTIVE).get()
    return step.repair_job or step.job


def test_a_template_run_records_template_and_version_in_its_job(catalogue, tenant) -> None:  # noqa: ANN001
    run = runs.start_template_run(tenant, template("marketing", "ad-copy-aida"), {**SEO_FREE_AD})
    job = run.steps.get().job

    assert job.origin | {} == job.origin
    assert job.origin["template"] == "ad-copy-aida" and job.origin["version"] == 1 and job.origin["run"] == str(run.pk)
    assert "Rosa's Bakery" in job.params["prompt"]


SEO_FREE_AD = {"business": "Rosa's Bakery", "offer": "2 loaves for £6", "audience": "parents"}


def test_valid_structured_output_lands_in_the_run_result(catalogue, tenant) -> None:  # noqa: ANN001
    run = runs.start_template_run(tenant, template("marketing", "seo-meta"), SEO)
    finish(current_job(run), f"Here you go:\n```json\n{VALID_SEO}\n```")

    run = runs.advance_run(run.pk)

    assert run.state == "succeeded"
    assert run.steps.get().output["data"]["slug"] == "dog-grooming-manchester"


@pytest.fixture
def unconstrained(monkeypatch) -> None:  # noqa: ANN001
    """The text generator as a plugin that cannot constrain its output (no `response_format` param)."""
    monkeypatch.setattr("scenarios.core.templates.constrains_output", lambda cls: False)


def test_a_structured_template_asks_a_generator_that_can_constrain_for_its_schema(catalogue, tenant) -> None:  # noqa: ANN001
    version = template("marketing", "seo-meta").latest

    params = render_params(version, SEO, {})

    assert params["response_format"] == {"type": "json_schema", "schema": version.output_schema}


def test_constrained_output_that_still_does_not_validate_fails_without_a_repair_job(catalogue, tenant) -> None:  # noqa: ANN001
    run = runs.start_template_run(tenant, template("marketing", "seo-meta"), SEO)
    finish(current_job(run), '{"title": "Dog grooming"}')

    run = runs.advance_run(run.pk)

    assert run.state == "failed" and run.error_code == "structured_output_invalid"
    assert run.steps.get().repair_job is None
    assert "'meta_description' is a required property" in run.error_message


def test_a_constrained_job_cut_off_by_its_budget_fails_the_run_with_structured_output_truncated(
    catalogue, tenant
) -> None:  # noqa: ANN001
    run = runs.start_template_run(tenant, template("marketing", "seo-meta"), SEO)
    job = jobs.claim_job(current_job(run).pk, "test-worker")
    jobs.fail_job(job, "structured_output_truncated", "the output did not complete its schema within 12 tokens")

    run = runs.advance_run(run.pk)

    assert run.state == "failed" and run.error_code == "structured_output_truncated"
    assert run.steps.get().repair_job is None
    assert "within 12 tokens" in run.error_message


def test_unparseable_output_gets_one_repair_job_that_can_fix_it(catalogue, tenant, unconstrained) -> None:  # noqa: ANN001
    run = runs.start_template_run(tenant, template("marketing", "seo-meta"), SEO)
    first = current_job(run)
    finish(first, "Title: Dog grooming Manchester. Description: lovely grooms.")

    runs.advance_run(run.pk)
    repair = current_job(run)

    assert repair.pk != first.pk
    assert repair.origin["repair_of"] == str(first.pk)
    assert "Title: Dog grooming Manchester" in repair.params["prompt"]
    finish(repair, VALID_SEO.replace('"', "'"))
    assert runs.advance_run(run.pk).state == "succeeded"


def test_output_still_invalid_after_the_repair_fails_the_run_clearly(catalogue, tenant, unconstrained) -> None:  # noqa: ANN001
    run = runs.start_template_run(tenant, template("marketing", "seo-meta"), SEO)
    finish(current_job(run), "no json here")
    runs.advance_run(run.pk)
    finish(current_job(run), '{"title": "Dog grooming"}')

    run = runs.advance_run(run.pk)

    assert run.state == "failed"
    assert run.error_code == "structured_output_invalid"
    assert run.failed_step == "seo_meta"
    assert "no JSON object or array" in run.error_message
    assert "'meta_description' is a required property" in run.error_message


def test_advancing_twice_does_nothing_more(catalogue, tenant, unconstrained) -> None:  # noqa: ANN001
    run = runs.start_template_run(tenant, template("marketing", "seo-meta"), SEO)
    finish(current_job(run), "no json here")
    runs.advance_run(run.pk)
    runs.advance_run(run.pk)
    assert run.steps.get().state == "repairing"


def test_a_recipe_feeds_earlier_outputs_into_later_variables(catalogue, tenant) -> None:  # noqa: ANN001
    recipe = Recipe.objects.get(slug="product-listing-kit")
    run = runs.start_recipe_run(tenant, recipe, {"product": "oak chopping board", "brand": "Woodly"})
    finish(current_job(run), "Woodly Oak Chopping Board 40 cm")
    runs.advance_run(run.pk)

    description_job = current_job(run)

    assert "Woodly Oak Chopping Board 40 cm: oak chopping board" in description_job.params["prompt"]
    assert description_job.origin["recipe"] == "product-listing-kit" and description_job.origin["step"] == "description"


def test_a_failed_job_fails_the_recipe_naming_the_step(catalogue, tenant) -> None:  # noqa: ANN001
    recipe = Recipe.objects.get(slug="product-listing-kit")
    run = runs.start_recipe_run(tenant, recipe, {"product": "oak chopping board", "brand": "Woodly"})
    job = jobs.claim_job(current_job(run).pk, "test-worker")
    jobs.fail_job(job, "model_load_failed", "could not load")

    run = runs.advance_run(run.pk)

    assert (run.state, run.failed_step, run.error_code) == ("failed", "title", "model_load_failed")
    assert "step `title` (ecommerce/product-title v1)" in run.error_message
    assert set(run.steps.exclude(index=0).values_list("state", flat=True)) == {"cancelled"}


def test_bad_variables_are_refused_naming_the_variable(catalogue, tenant) -> None:  # noqa: ANN001
    with pytest.raises(InvalidInput) as refused:
        runs.start_template_run(
            tenant, template("ecommerce", "review-reply"), {"review": "ok", "rating": 9, "business": "X"}
        )
    assert refused.value.fields[0]["field"] == "variables.rating"
