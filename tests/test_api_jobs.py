"""The job API in process: submission, listing, filters, cancellation and every bad input as a 4xx."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from aigc_saas.jobs.models import Job
from aigc_saas.plugins.models import PluginRecord

pytestmark = pytest.mark.django_db

TEXT = "transformers-text"


def submit(client, body, **kwargs):  # noqa: ANN001, ANN201
    return client.post(
        "/api/v1/jobs", body if isinstance(body, str) else json.dumps(body), content_type="application/json", **kwargs
    )


def error(response) -> dict:  # noqa: ANN001
    return response.json()["error"]


def test_submission_answers_202_with_the_queued_job_and_its_url(acme, tenant) -> None:  # noqa: ANN001
    response = submit(acme, {"generator": TEXT, "params": {"prompt": "Hello"}})
    assert response.status_code == 202
    body = response.json()
    assert body["state"] == "queued"
    assert response.headers["Location"] == body["url"]
    assert body["url"].endswith(f"/api/v1/jobs/{body['id']}")
    job = Job.objects.get(pk=body["id"])
    assert job.tenant == tenant
    assert job.queue == "cpu"
    assert job.params["max_new_tokens"] == 256  # the plugin's defaults are recorded with the job
    assert job.plugin_version


def test_admin_default_params_apply_under_the_jobs_params(acme) -> None:  # noqa: ANN001
    PluginRecord.objects.filter(name=TEXT).update(default_params={"max_new_tokens": 32, "temperature": 0.1})
    body = submit(acme, {"generator": TEXT, "params": {"prompt": "Hi", "temperature": 0.5}}).json()
    assert body["params"]["max_new_tokens"] == 32
    assert body["params"]["temperature"] == 0.5


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"generator": "nope", "params": {"prompt": "x"}}, 400, "unknown_generator", None),
        ({"params": {"prompt": "x"}}, 400, "invalid_request", "generator"),
        ({"generator": TEXT, "params": {}}, 400, "invalid_params", "params.prompt"),
        ({"generator": TEXT, "params": {"prompt": "x" * 8001}}, 400, "invalid_params", "params.prompt"),
        (
            {"generator": TEXT, "params": {"prompt": "x", "max_new_tokens": 0}},
            400,
            "invalid_params",
            "params.max_new_tokens",
        ),
        (
            {"generator": TEXT, "params": {"prompt": "x", "temperature": "hot"}},
            400,
            "invalid_params",
            "params.temperature",
        ),
        ({"generator": TEXT, "params": {"prompt": "x", "colour": "red"}}, 400, "invalid_params", "params.colour"),
        ({"generator": TEXT, "params": ["prompt"]}, 400, "invalid_params", "params"),
        ({"generator": TEXT, "params": {"prompt": "a\u0000b"}}, 400, "invalid_request", "params.prompt"),
        ({"generator": TEXT, "params": {"prompt": "x"}, "model": "gpt2"}, 400, "model_not_allowed", None),
        (
            {"generator": TEXT, "params": {"prompt": "x"}, "webhook_url": "ftp://x"},
            400,
            "invalid_request",
            "webhook_url",
        ),
    ],
)
def test_bad_submissions_answer_4xx_naming_the_field(acme, body, status, code, field) -> None:  # noqa: ANN001
    response = submit(acme, body)
    assert response.status_code == status, response.content
    err = error(response)
    assert err["code"] == code
    named = field or "generator" if code == "unknown_generator" else field or "model"
    assert f"`{named}" in err["message"]
    if field:
        assert field in [f["field"] for f in err["fields"]]
    assert Job.objects.count() == 0


def test_each_bad_param_is_reported_separately(acme) -> None:  # noqa: ANN001
    err = error(submit(acme, {"generator": TEXT, "params": {"prompt": "", "top_p": 5, "seed": -1}}))
    assert {f["field"] for f in err["fields"]} == {"params.prompt", "params.top_p", "params.seed"}


def test_a_disabled_generator_refuses_jobs(acme) -> None:  # noqa: ANN001
    PluginRecord.objects.filter(name=TEXT).update(enabled=False)
    response = submit(acme, {"generator": TEXT, "params": {"prompt": "x"}})
    assert response.status_code == 400
    assert error(response)["code"] == "generator_disabled"
    assert TEXT not in [g["name"] for g in acme.get("/api/v1/generators").json()]


def test_malformed_json_answers_400(acme) -> None:  # noqa: ANN001
    response = submit(acme, '{"generator": "transformers-text", "params": ')
    assert response.status_code == 400
    assert error(response)["code"] == "malformed_json"
    assert "`body`" in error(response)["message"]


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=2048)
def test_an_oversized_body_answers_413(acme) -> None:  # noqa: ANN001
    response = submit(acme, {"generator": TEXT, "params": {"prompt": "x" * 4000}})
    assert response.status_code == 413
    assert error(response)["code"] == "payload_too_large"


def test_a_model_the_admin_allows_can_be_chosen_per_job(acme) -> None:  # noqa: ANN001
    PluginRecord.objects.filter(name=TEXT).update(config={"allowed_models": ["org/other-model"]})
    body = submit(acme, {"generator": TEXT, "params": {"prompt": "x"}, "model": "org/other-model"}).json()
    assert body["model_id"] == "org/other-model"


@override_settings(AIGC_QUEUES=["gpu", "cpu"])
def test_the_queue_follows_the_plugins_device_preference(acme) -> None:  # noqa: ANN001
    body = submit(acme, {"generator": TEXT, "params": {"prompt": "x"}}).json()
    assert Job.objects.get(pk=body["id"]).queue == "gpu"


def test_list_is_paginated_and_filtered_by_state_and_generator(acme, tenant) -> None:  # noqa: ANN001
    for i in range(3):
        submit(acme, {"generator": TEXT, "params": {"prompt": f"p{i}"}})
    Job.objects.filter(pk=Job.objects.first().pk).update(state="failed")
    page = acme.get("/api/v1/jobs?page_size=2").json()
    assert page["count"] == 3 and len(page["results"]) == 2 and page["next"]
    assert acme.get("/api/v1/jobs?state=failed").json()["count"] == 1
    assert acme.get(f"/api/v1/jobs?generator={TEXT}").json()["count"] == 3
    assert acme.get("/api/v1/jobs?generator=other").json()["count"] == 0
    bad = acme.get("/api/v1/jobs?state=exploded")
    assert bad.status_code == 400 and error(bad)["code"] == "invalid_filter"


def test_cancelling_a_queued_job_cancels_it_and_a_finished_one_is_a_409(acme) -> None:  # noqa: ANN001
    job = submit(acme, {"generator": TEXT, "params": {"prompt": "x"}}).json()
    response = acme.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    again = acme.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409
    assert error(again)["code"] == "job_not_cancellable"


def test_generators_list_each_enabled_plugin_with_its_params_schema(acme) -> None:  # noqa: ANN001
    generators = {g["name"]: g for g in acme.get("/api/v1/generators").json()}
    text = generators[TEXT]
    assert text["modality"] == "text"
    assert text["params_schema"]["properties"]["max_new_tokens"]["maximum"] == 2048
    assert text["default_model"]
    detail = acme.get(f"/api/v1/generators/{TEXT}")
    assert detail.json()["name"] == TEXT
    assert acme.get("/api/v1/generators/nope").status_code == 404


def test_unknown_api_paths_answer_json_404(acme) -> None:  # noqa: ANN001
    response = acme.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert error(response)["code"] == "not_found"


def test_schema_and_swagger_ui_are_served(client) -> None:  # noqa: ANN001
    schema = client.get("/api/v1/schema", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    assert "/api/v1/jobs" in schema.json()["paths"]
    assert client.get("/api/v1/docs").status_code == 200
