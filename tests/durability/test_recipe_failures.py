"""Recipe and template runs never stick: every failure fails the run naming its step, and the stale-run sweep
goes on past a run that cannot advance. The worker's part (claim, finish) is played by the test."""

from __future__ import annotations

import pytest
from django.db import OperationalError

from aigc_saas.accounts.models import Tenant
from aigc_saas.jobs import services as jobs
from aigc_saas.jobs.models import Job
from aigc_saas.plugins.models import PluginRecord
from generators.base import GenerationResult
from scenarios.core import recipes, runs
from scenarios.core import tasks as scenario_tasks
from scenarios.core.models import Run, Template

pytestmark = pytest.mark.django_db

SEO = {"page_topic": "Dog grooming in Manchester", "primary_keyword": "dog grooming manchester", "brand": "Happy Paws"}
VALID_SEO = (
    '{"title": "Dog grooming Manchester | Happy Paws", "meta_description": "Full grooms, nail trims and puppy '
    'sessions in Manchester from friendly groomers.", "slug": "dog-grooming-manchester", "focus_keywords": ["dog"]}'
)


def finish(job: Job, text: str) -> None:
    jobs.finish_job(jobs.claim_job(job.pk, "test-worker"), GenerationResult(text=text))


def current_job(run: Run) -> Job:
    step = run.steps.filter(state__in=runs.ACTIVE).get()
    return step.repair_job or step.job


def seo_run(tenant: Tenant) -> Run:
    template = Template.objects.get(tenant=None, scenario="marketing", slug="seo-meta")
    return runs.start_template_run(tenant, template, SEO)


@pytest.fixture
def unconstrained(monkeypatch) -> None:  # noqa: ANN001
    """The text generator as a plugin that cannot constrain its output, so an unparseable output gets a repair."""
    monkeypatch.setattr("scenarios.core.templates.constrains_output", lambda cls: False)


@pytest.fixture
def rating_recipe(catalogue):  # noqa: ANN001, ANN201
    """A recipe whose second step reads an integer (a star rating) from the first step's text."""
    recipe, _ = recipes.save_recipe(
        {
            "scenario": "ecommerce",
            "slug": "rated-reply",
            "title": "Rated reply",
            "variables": [{"name": "product", "type": "text", "description": "What is sold."}],
            "steps": [
                {
                    "name": "title",
                    "template": "ecommerce/product-title",
                    "variables": {"product": "{{ inputs.product }}", "brand": "Kiln"},
                },
                {
                    "name": "reply",
                    "template": "ecommerce/review-reply",
                    "variables": {
                        "review": "{{ steps.title.text }}",
                        "rating": "{{ steps.title.text }}",
                        "business": "Kiln",
                    },
                },
            ],
            "sample_variables": {"product": "a mug"},
        }
    )
    return recipe


@pytest.mark.parametrize("text", ["twelve", "1e999", "nan", "4"])
def test_a_step_variable_an_earlier_step_wrote_badly_fails_the_run_naming_the_step(
    tenant, rating_recipe, text: str
) -> None:  # noqa: ANN001
    run = runs.start_recipe_run(tenant, rating_recipe, {"product": "a stoneware mug"})
    finish(current_job(run), text)

    run = runs.advance_run(run.pk)

    if text == "4":  # the control: a number goes on to the next step
        assert run.state == "running" and current_job(run).origin["step"] == "reply"
        return
    assert (run.state, run.failed_step, run.error_code) == ("failed", "reply", "invalid_step_variable")
    assert "`steps.reply.variables.rating`" in run.error_message and "step `reply`" in run.error_message


def test_a_repair_refused_by_the_quota_fails_the_run_naming_the_step(catalogue, tenant, unconstrained) -> None:  # noqa: ANN001
    run = seo_run(tenant)
    Tenant.objects.filter(pk=tenant.pk).update(max_jobs_per_day=1)  # the first job used today's only one
    finish(current_job(run), "no json here")

    run = runs.advance_run(run.pk)

    assert (run.state, run.failed_step, run.error_code) == ("failed", "seo_meta", "quota_exceeded")
    assert "the repair job could not be submitted" in run.error_message
    assert run.steps.get().state == "failed"


def test_a_repair_for_a_generator_disabled_meanwhile_fails_the_run(catalogue, tenant, unconstrained) -> None:  # noqa: ANN001
    run = seo_run(tenant)
    finish(current_job(run), "no json here")
    PluginRecord.objects.filter(name="transformers-text").update(enabled=False)

    run = runs.advance_run(run.pk)

    assert (run.state, run.failed_step, run.error_code) == ("failed", "seo_meta", "generator_disabled")


def test_an_unexpected_error_while_advancing_fails_the_run_with_its_step(catalogue, tenant, monkeypatch) -> None:  # noqa: ANN001
    run = seo_run(tenant)
    finish(current_job(run), VALID_SEO)

    def broken(text, schema):  # noqa: ANN001, ANN202
        raise KeyError("a bug in the parser")

    monkeypatch.setattr(runs, "parse_structured", broken)
    run = runs.advance_run(run.pk)

    assert (run.state, run.failed_step, run.error_code) == ("failed", "seo_meta", "internal_error")
    assert "KeyError" in run.error_message


def test_the_stale_run_sweep_advances_every_run_past_one_that_breaks(catalogue, tenant, monkeypatch) -> None:  # noqa: ANN001
    good, bad = seo_run(tenant), seo_run(tenant)
    finish(current_job(good), VALID_SEO)
    finish(current_job(bad), "BOOM")
    original = runs.parse_structured

    def parse(text, schema):  # noqa: ANN001, ANN202
        if text == "BOOM":
            raise RuntimeError("the parser crashed on this output")
        return original(text, schema)

    monkeypatch.setattr(runs, "parse_structured", parse)

    assert scenario_tasks.advance_stale_runs() == 2  # the Celery task's own function, as beat runs it

    assert Run.objects.get(pk=good.pk).state == "succeeded"
    assert (Run.objects.get(pk=bad.pk).state, Run.objects.get(pk=bad.pk).error_code) == ("failed", "internal_error")
    assert runs.stale_run_ids() == []


def test_a_database_outage_for_one_run_leaves_it_for_the_next_sweep_and_advances_the_others(
    catalogue, tenant, monkeypatch
) -> None:  # noqa: ANN001
    first, second = seo_run(tenant), seo_run(tenant)
    finish(current_job(first), VALID_SEO)
    finish(current_job(second), VALID_SEO)
    original = runs._advance

    def advance(run):  # noqa: ANN001, ANN202
        if run.pk == first.pk:
            raise OperationalError("database is locked")
        return original(run)

    monkeypatch.setattr(runs, "_advance", advance)

    assert runs.advance_stale_runs() == 2

    assert Run.objects.get(pk=first.pk).state == "running"  # transient: not failed, the next sweep retries it
    assert Run.objects.get(pk=second.pk).state == "succeeded"
    monkeypatch.setattr(runs, "_advance", original)
    runs.advance_stale_runs()
    assert Run.objects.get(pk=first.pk).state == "succeeded"
