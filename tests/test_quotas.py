"""Per-tenant quotas are enforced in the submit service: a 429 naming the quota, and no job recorded."""

from __future__ import annotations

import json

import pytest

from aigc_saas.jobs.models import Job

pytestmark = pytest.mark.django_db


def submit(client):  # noqa: ANN001, ANN201
    body = {"generator": "transformers-text", "params": {"prompt": "hello"}}
    return client.post("/api/v1/jobs", json.dumps(body), content_type="application/json")


def test_a_tenant_without_quotas_is_not_limited(acme) -> None:  # noqa: ANN001
    assert all(submit(acme).status_code == 202 for _ in range(5))


def test_the_daily_quota_refuses_the_job_past_it(acme, tenant) -> None:  # noqa: ANN001
    tenant.max_jobs_per_day = 2
    tenant.save()
    assert [submit(acme).status_code for _ in range(2)] == [202, 202]

    refused = submit(acme)

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "quota_exceeded"
    assert "`max_jobs_per_day`" in refused.json()["error"]["message"]
    assert Job.objects.filter(tenant=tenant).count() == 2


def test_the_active_jobs_quota_frees_up_when_a_job_finishes(acme, tenant) -> None:  # noqa: ANN001
    tenant.max_active_jobs = 1
    tenant.save()
    first = submit(acme).json()
    assert submit(acme).status_code == 429
    acme.post(f"/api/v1/jobs/{first['id']}/cancel")
    assert submit(acme).status_code == 202


def test_quotas_of_one_tenant_do_not_touch_another(acme, globex, tenant) -> None:  # noqa: ANN001
    tenant.max_jobs_per_day = 0
    tenant.save()
    assert submit(acme).status_code == 429
    assert submit(globex).status_code == 202


def test_the_account_endpoint_shows_quotas_usage_and_the_webhook_secret(acme, tenant, tenant_key) -> None:  # noqa: ANN001
    tenant.max_jobs_per_day, tenant.max_active_jobs = 10, None
    tenant.save()
    submit(acme)
    account = acme.get("/api/v1/account").json()
    assert account["tenant"] == "acme"
    assert account["quotas"] == {"max_jobs_per_day": 10, "max_active_jobs": None}
    assert account["usage"] == {"jobs_today": 1, "active_jobs": 1}
    assert account["webhook_secret"] == tenant.webhook_secret
    assert tenant_key[0].prefix in account["api_key"]
