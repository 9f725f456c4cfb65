"""Every endpoint scopes to the caller's tenant: another tenant's ids answer 404, never 403."""

from __future__ import annotations

import json

import pytest
from django.core.files.base import ContentFile

from aigc_saas.jobs.models import Artifact, Job

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme_job(acme) -> Job:  # noqa: ANN001
    body = acme.post(
        "/api/v1/jobs",
        json.dumps({"generator": "transformers-text", "params": {"prompt": "x"}}),
        content_type="application/json",
    ).json()
    return Job.objects.get(pk=body["id"])


@pytest.fixture
def acme_artifact(acme_job) -> Artifact:  # noqa: ANN001
    artifact = Artifact(job=acme_job, filename="a.txt", content_type="text/plain", size=2, sha256="0" * 64)
    artifact.file.save("a.txt", ContentFile(b"hi"), save=True)
    return artifact


def test_another_tenants_job_is_not_found(globex, acme_job) -> None:  # noqa: ANN001
    assert globex.get(f"/api/v1/jobs/{acme_job.pk}").status_code == 404
    assert globex.post(f"/api/v1/jobs/{acme_job.pk}/cancel").status_code == 404
    assert globex.get(f"/api/v1/jobs/{acme_job.pk}/events").status_code == 404
    acme_job.refresh_from_db()
    assert acme_job.state == "queued"


def test_another_tenants_artifact_is_not_found(globex, acme, acme_artifact) -> None:  # noqa: ANN001
    path = f"/api/v1/jobs/{acme_artifact.job_id}/artifacts/{acme_artifact.pk}/content"
    assert globex.get(path).status_code == 404
    own = acme.get(path)
    assert own.status_code == 200
    assert b"".join(own.streaming_content) == b"hi"


def test_job_lists_show_only_the_callers_jobs(globex, acme, acme_job) -> None:  # noqa: ANN001
    assert globex.get("/api/v1/jobs").json()["count"] == 0
    assert acme.get("/api/v1/jobs").json()["count"] == 1
