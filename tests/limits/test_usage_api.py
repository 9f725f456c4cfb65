"""GET /api/v1/usage: daily totals per generator of the caller's tenant's ended jobs; CSV in the admin."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from aigc_saas.jobs.models import Job, JobState

pytestmark = pytest.mark.django_db

TEXT = {
    "tokens_in": 10,
    "tokens_out": 5,
    "images": 0,
    "image_megapixel_steps": 0,
    "audio_seconds": 0,
    "run_seconds": 0.5,
}
IMAGE = {
    "tokens_in": 0,
    "tokens_out": 0,
    "images": 2,
    "image_megapixel_steps": 1.5,
    "audio_seconds": 0,
    "run_seconds": 3.0,
}


def ended(tenant, generator: str, usage: dict, when: datetime, state: str = JobState.SUCCEEDED) -> Job:  # noqa: ANN001
    # Rows as the worker leaves them; the usage values are what metering stored.
    return Job.objects.create(
        tenant=tenant, generator=generator, params={}, queue="cpu", state=state, usage=usage, finished_at=when
    )


def test_daily_totals_per_generator_for_the_callers_tenant(acme, tenant, other_tenant) -> None:  # noqa: ANN001
    day1 = datetime(2026, 3, 1, 10, tzinfo=UTC)
    ended(tenant, "transformers-text", TEXT, day1)
    ended(tenant, "transformers-text", TEXT, day1 + timedelta(hours=13))  # 23:00, same UTC day
    ended(tenant, "transformers-text", {}, day1 + timedelta(hours=1), state=JobState.CANCELLED)
    ended(tenant, "diffusers-image", IMAGE, day1 + timedelta(days=1))
    ended(other_tenant, "transformers-text", TEXT, day1)  # not the caller's
    Job.objects.create(tenant=tenant, generator="transformers-text", params={}, queue="cpu")  # still queued

    body = acme.get("/api/v1/usage", {"since": "2026-03-01", "until": "2026-03-02"}).json()

    assert body["since"] == "2026-03-01" and body["until"] == "2026-03-02"
    days = {(d["date"], d["generator"]): d for d in body["days"]}
    assert set(days) == {("2026-03-01", "transformers-text"), ("2026-03-02", "diffusers-image")}
    text = days[("2026-03-01", "transformers-text")]
    assert (text["jobs"], text["succeeded"], text["cancelled"]) == (3, 2, 1)
    assert (text["tokens_in"], text["tokens_out"], text["run_seconds"]) == (20, 10, 1.0)
    image = days[("2026-03-02", "diffusers-image")]
    assert (image["images"], image["image_megapixel_steps"]) == (2, 1.5)
    assert {t["generator"]: t["jobs"] for t in body["totals"]} == {"diffusers-image": 1, "transformers-text": 3}


def test_the_range_is_inclusive_and_defaults_to_the_last_30_days(acme, tenant) -> None:  # noqa: ANN001
    now = datetime.now(UTC)
    ended(tenant, "transformers-text", TEXT, now)
    ended(tenant, "transformers-text", TEXT, now - timedelta(days=40))

    body = acme.get("/api/v1/usage").json()

    assert body["until"] == now.date().isoformat()
    assert body["since"] == (now.date() - timedelta(days=29)).isoformat()
    assert sum(d["jobs"] for d in body["days"]) == 1
    only_day = acme.get("/api/v1/usage", {"since": body["until"], "until": body["until"]}).json()
    assert sum(d["jobs"] for d in only_day["days"]) == 1


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-02-30"}, "until"),
        ({"since": "2026-03-02", "until": "2026-03-01"}, "since"),
        ({"since": "2024-01-01", "until": "2026-01-01"}, "since"),
    ],
)
def test_bad_ranges_are_a_400_naming_the_field(acme, query, field) -> None:  # noqa: ANN001
    response = acme.get("/api/v1/usage", query)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_filter"
    assert f"`{field}`" in response.json()["error"]["message"]


def test_a_nul_in_a_date_is_a_400_not_a_500(acme) -> None:  # noqa: ANN001
    response = acme.get("/api/v1/usage", {"since": "2026-03-01\x00"})
    assert response.status_code == 400
    assert "`since`" in response.json()["error"]["message"]


def test_usage_needs_the_read_scope(client_for, tenant) -> None:  # noqa: ANN001
    from aigc_saas.accounts.services import create_api_key

    _, raw = create_api_key(tenant, "writer", scopes=["submit"])
    assert client_for(raw).get("/api/v1/usage").status_code == 403


def test_the_admin_page_lists_and_exports_per_tenant_totals_as_csv(admin_client, tenant, other_tenant) -> None:  # noqa: ANN001
    day = datetime(2026, 3, 1, 12, tzinfo=UTC)
    ended(tenant, "transformers-text", TEXT, day)
    ended(other_tenant, "diffusers-image", IMAGE, day)

    page = admin_client.get("/admin/usage/usagesummary/", {"since": "2026-03-01", "until": "2026-03-01"})
    assert page.status_code == 200
    assert b"acme" in page.content and b"globex" in page.content

    export = admin_client.get(
        "/admin/usage/usagesummary/", {"since": "2026-03-01", "until": "2026-03-01", "format": "csv"}
    )
    assert export["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.content.decode())))
    assert [(r["date"], r["tenant"], r["generator"], r["jobs"]) for r in rows] == [
        ("2026-03-01", "acme", "transformers-text", "1"),
        ("2026-03-01", "globex", "diffusers-image", "1"),
    ]
    assert rows[0]["tokens_in"] == "10" and rows[1]["image_megapixel_steps"] == "1.5"

    only_acme = admin_client.get(
        "/admin/usage/usagesummary/", {"since": "2026-03-01", "until": "2026-03-01", "tenant": "acme", "format": "csv"}
    )
    assert len(list(csv.DictReader(io.StringIO(only_acme.content.decode())))) == 1
    bad = admin_client.get("/admin/usage/usagesummary/", {"since": "nope"})
    assert bad.status_code == 200 and b"is not a date" in bad.content


def test_staff_without_job_permission_cannot_see_usage(client, django_user_model) -> None:  # noqa: ANN001
    user = django_user_model.objects.create_user("viewer", password="pw-123456", is_staff=True)
    client.force_login(user)
    assert client.get("/admin/usage/usagesummary/").status_code == 403
