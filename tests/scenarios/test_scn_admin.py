"""Admin: the template page previews the rendered prompt, saving an edit adds a version, runs show their jobs."""

from __future__ import annotations

import pytest
from django.urls import reverse

from scenarios.core import runs
from scenarios.core.models import Template

pytestmark = pytest.mark.django_db


def test_template_page_previews_the_prompt_rendered_from_the_sample_variables(admin_client, catalogue) -> None:  # noqa: ANN001
    template = Template.objects.get(tenant=None, scenario="education", slug="quiz")

    page = admin_client.get(reverse("admin:scenarios_core_template_change", args=[template.pk]))

    assert page.status_code == 200
    assert "multiple-choice quiz on photosynthesis" in page.content.decode()


def test_saving_an_edit_in_the_admin_creates_a_new_version(admin_client, catalogue) -> None:  # noqa: ANN001
    template = Template.objects.get(tenant=None, scenario="marketing", slug="social-image")
    url = reverse("admin:scenarios_marketing_marketingtemplate_change", args=[template.pk])
    form = admin_client.get(url).context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None}
    data = {k: (form.fields[k].prepare_value(v) if k in form.fields else v) for k, v in data.items()}
    data |= {"title": "Square social image", "tenant": "", "versions-TOTAL_FORMS": 1, "versions-INITIAL_FORMS": 1}
    data |= {"versions-0-id": template.latest.pk, "versions-0-template": template.pk}

    response = admin_client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    template.refresh_from_db()
    assert (template.latest_version, template.latest.title) == (2, "Square social image")


def test_run_page_lists_the_child_jobs(admin_client, catalogue, tenant) -> None:  # noqa: ANN001
    template = Template.objects.get(tenant=None, scenario="ecommerce", slug="product-title")
    run = runs.start_template_run(tenant, template, {"product": "oak board", "brand": "Woodly"})

    page = admin_client.get(reverse("admin:scenarios_core_run_change", args=[run.pk])).content.decode()

    assert str(run.steps.get().job_id) in page
