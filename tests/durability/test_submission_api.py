"""Submission over the API: `Idempotency-Key` on every submission endpoint, batches of jobs each accepted or
refused on their own, and the warning when no live worker consumes a job's queue."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.utils import timezone

from aigc_saas.accounts.models import Tenant
from aigc_saas.jobs.models import Job, WorkerStatus
from scenarios.core.models import Run, Template

pytestmark = pytest.mark.django_db

TEXT = "transformers-text"
HELLO = {"generator": TEXT, "params": {"prompt": "Hello"}}


def post(client, path: str, body: Any, key: str | None = None):  # noqa: ANN001, ANN201
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post(f"/api/v1/{path}", json.dumps(body), content_type="application/json", headers=headers)


def test_the_same_key_and_body_return_the_first_job_and_make_no_second(acme) -> None:  # noqa: ANN001
    first = post(acme, "jobs", HELLO, key="order-42")
    again = post(acme, "jobs", HELLO, key="order-42")

    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert Job.objects.count() == 1


def test_the_same_key_with_another_body_is_a_409(acme) -> None:  # noqa: ANN001
    post(acme, "jobs", HELLO, key="order-42")

    response = post(acme, "jobs", {**HELLO, "params": {"prompt": "Goodbye"}}, key="order-42")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert Job.objects.count() == 1


def test_keys_belong_to_their_tenant(acme, globex) -> None:  # noqa: ANN001
    mine = post(acme, "jobs", HELLO, key="shared-key").json()
    theirs = post(globex, "jobs", HELLO, key="shared-key").json()

    assert mine["id"] != theirs["id"]


@pytest.mark.parametrize("key", ["", "   ", "x" * 151, "naïve", " padded"])
def test_a_bad_key_is_a_400_naming_the_header(acme, key: str) -> None:  # noqa: ANN001
    response = post(acme, "jobs", HELLO, key=key)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_idempotency_key"
    assert error["fields"][0]["field"] == "Idempotency-Key"
    assert Job.objects.count() == 0


def test_a_submission_without_a_live_worker_on_its_queue_warns(acme) -> None:  # noqa: ANN001
    response = post(acme, "jobs", HELLO)

    assert response.status_code == 202
    [warning] = response.json()["warnings"]
    assert (warning["code"], warning["queue"]) == ("no_worker_for_queue", "cpu")
    assert response.headers["Warning"].startswith('199 aigc-saas "no live worker consumes queue')


def test_a_submission_with_a_live_worker_has_no_warning(acme) -> None:  # noqa: ANN001
    WorkerStatus.objects.create(name="w1", queues=["cpu"], updated_at=timezone.now())

    response = post(acme, "jobs", HELLO)

    assert response.json()["warnings"] == []
    assert "Warning" not in response.headers


def test_a_template_run_with_the_same_key_returns_the_same_run(acme, catalogue) -> None:  # noqa: ANN001
    template = Template.objects.get(tenant=None, scenario="marketing", slug="ad-copy-aida")
    body = {"variables": {"business": "Rosa's Bakery", "offer": "2 loaves for £6", "audience": "parents"}}

    first = post(acme, f"templates/{template.pk}/runs", body, key="campaign-7")
    again = post(acme, f"templates/{template.pk}/runs", body, key="campaign-7")
    other = post(
        acme, f"templates/{template.pk}/runs", {"variables": {**body["variables"], "offer": "free"}}, "campaign-7"
    )

    assert first.status_code == again.status_code == 202, first.content
    assert again.json()["id"] == first.json()["id"]
    assert (Run.objects.count(), Job.objects.count()) == (1, 1)
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"


def test_a_recipe_run_with_the_same_key_returns_the_same_run(acme, catalogue) -> None:  # noqa: ANN001
    body = {"variables": {"product": "oak chopping board", "brand": "Woodly"}}

    first = post(acme, "recipes/product-listing-kit/runs", body, key="kit-1")
    again = post(acme, "recipes/product-listing-kit/runs", body, key="kit-1")

    assert first.status_code == again.status_code == 202, first.content
    assert again.json()["id"] == first.json()["id"]
    assert Run.objects.count() == 1


def test_a_batch_accepts_and_refuses_each_job_on_its_own_under_one_batch_id(acme) -> None:  # noqa: ANN001
    response = post(
        acme,
        "jobs/batch",
        {
            "jobs": [
                HELLO,
                {"generator": TEXT, "params": {}},
                {"generator": "nope", "params": {"prompt": "x"}},
                {"params": {"prompt": "no generator"}},
                "not an object",
                {"generator": TEXT, "params": {"prompt": "second"}},
            ]
        },
    )

    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["refused"]) == (2, 4)
    results = body["results"]
    assert [r["status"] for r in results] == [202, 400, 400, 400, 400, 202]
    assert results[1]["error"]["code"] == "invalid_params"
    assert results[1]["error"]["fields"][0]["field"] == "jobs.1.params.prompt"
    assert results[2]["error"]["code"] == "unknown_generator"
    assert results[3]["error"]["fields"][0]["field"] == "jobs.3.generator"
    assert [r["job"] is None for r in results] == [False, True, True, True, True, False]
    listed = acme.get(body["jobs_url"]).json()
    assert {j["id"] for j in listed["results"]} == {results[0]["job"]["id"], results[5]["job"]["id"]}
    assert set(Job.objects.values_list("batch_id", flat=True)) == {uuid.UUID(body["batch_id"])}


def test_a_batch_retried_with_its_key_returns_the_same_jobs_and_batch(acme) -> None:  # noqa: ANN001
    body = {"jobs": [HELLO, {"generator": TEXT, "params": {"prompt": "two"}}]}

    first = post(acme, "jobs/batch", body, key="nightly-2026-11-27").json()
    again = post(acme, "jobs/batch", body, key="nightly-2026-11-27").json()

    assert again["batch_id"] == first["batch_id"]
    assert [r["job"]["id"] for r in again["results"]] == [r["job"]["id"] for r in first["results"]]
    assert Job.objects.count() == 2


def test_a_batch_counts_each_job_against_the_quota(acme, tenant) -> None:  # noqa: ANN001
    Tenant.objects.filter(pk=tenant.pk).update(max_active_jobs=2)

    body = post(acme, "jobs/batch", {"jobs": [HELLO, HELLO, HELLO]}).json()

    assert [r["status"] for r in body["results"]] == [202, 202, 429]
    assert body["results"][2]["error"]["code"] == "quota_exceeded"


def test_a_batch_where_nothing_was_accepted_answers_200(acme) -> None:  # noqa: ANN001
    response = post(acme, "jobs/batch", {"jobs": [{"generator": "nope"}]})

    assert response.status_code == 200
    assert response.json()["accepted"] == 0


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"jobs": []}, "batch_empty"),
        ({"jobs": [HELLO] * 101}, "batch_too_large"),
        ({"jobs": "many"}, "invalid_request"),
        ([HELLO], "invalid_request"),
    ],
)
def test_a_bad_batch_envelope_is_a_400_with_a_code(acme, body: Any, code: str) -> None:  # noqa: ANN001
    response = post(acme, "jobs/batch", body)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert Job.objects.count() == 0


def test_a_batch_filter_that_is_not_an_id_is_a_400(acme) -> None:  # noqa: ANN001
    response = acme.get("/api/v1/jobs?batch=yesterday")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_filter"
