"""New tenants start with the deployment's default quotas; existing tenants keep theirs."""

from __future__ import annotations

import pytest

from aigc_saas.accounts.models import Tenant
from aigc_saas.accounts.services import create_tenant

pytestmark = pytest.mark.django_db


def test_a_new_tenant_gets_the_default_quotas(settings) -> None:  # noqa: ANN001
    assert (settings.AIGC_DEFAULT_MAX_JOBS_PER_DAY, settings.AIGC_DEFAULT_MAX_ACTIVE_JOBS) == (1000, 50)
    tenant = create_tenant("Fresh Co", "fresh")
    assert (tenant.max_jobs_per_day, tenant.max_active_jobs) == (1000, 50)


def test_the_defaults_come_from_settings_and_zero_means_no_limit(settings) -> None:  # noqa: ANN001
    settings.AIGC_DEFAULT_MAX_JOBS_PER_DAY = 5
    settings.AIGC_DEFAULT_MAX_ACTIVE_JOBS = None
    tenant = create_tenant("Small Co", "small")
    assert (tenant.max_jobs_per_day, tenant.max_active_jobs) == (5, None)


def test_changing_the_defaults_leaves_existing_tenants_alone(settings) -> None:  # noqa: ANN001
    tenant = create_tenant("Old Co", "old")
    tenant.max_jobs_per_day = 7
    tenant.save()

    settings.AIGC_DEFAULT_MAX_JOBS_PER_DAY = 99
    settings.AIGC_DEFAULT_MAX_ACTIVE_JOBS = 3

    tenant = Tenant.objects.get(pk=tenant.pk)
    assert (tenant.max_jobs_per_day, tenant.max_active_jobs) == (7, 50)


def test_a_tenant_added_in_the_admin_gets_the_defaults_and_they_apply(admin_client, settings, client_for) -> None:  # noqa: ANN001
    settings.AIGC_DEFAULT_MAX_JOBS_PER_DAY = 1
    form = admin_client.get("/admin/accounts/tenant/add/")
    assert b'name="max_jobs_per_day" value="1"' in form.content

    response = admin_client.post(
        "/admin/accounts/tenant/add/",
        {
            "slug": "viaadmin",
            "name": "Via Admin",
            "is_active": "on",
            "max_jobs_per_day": "1",
            "max_active_jobs": "50",
            "membership_set-TOTAL_FORMS": "0",
            "membership_set-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 302, response.content[:3000]
    tenant = Tenant.objects.get(slug="viaadmin")
    assert tenant.max_jobs_per_day == 1


def test_the_default_daily_quota_is_enforced(client_for, settings) -> None:  # noqa: ANN001
    import json

    from aigc_saas.accounts.services import create_api_key

    settings.AIGC_DEFAULT_MAX_JOBS_PER_DAY = 2
    tenant = create_tenant("Tiny Co", "tiny")
    client = client_for(create_api_key(tenant, "ci")[1])
    body = json.dumps({"generator": "transformers-text", "params": {"prompt": "hi"}})
    codes = [client.post("/api/v1/jobs", body, content_type="application/json").status_code for _ in range(3)]
    assert codes == [202, 202, 429]
