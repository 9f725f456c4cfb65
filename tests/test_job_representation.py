"""A job's JSON is written out by hand for speed; it must stay exactly what DRF's walk over the declared fields
(which also makes the OpenAPI schema) gives, for every state a client can see."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.test import RequestFactory
from django.utils import timezone
from rest_framework.request import Request

from aigc_saas.api.batches import JobAcceptedSerializer
from aigc_saas.api.serializers import JobSerializer
from aigc_saas.jobs.models import Artifact, Job, JobState

pytestmark = pytest.mark.django_db


def _request() -> Request:
    return Request(RequestFactory().get("/api/v1/jobs", HTTP_HOST="localhost"))


def _job(tenant, **fields) -> Job:  # noqa: ANN001
    base = {
        "tenant": tenant,
        "generator": "transformers-text",
        "plugin_version": "1.2.0",
        "model_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "params": {"prompt": "Name a bakery.", "max_new_tokens": 8, "nested": {"a": [1, 2.5, None, "x"]}},
        "queue": "cpu",
        "origin": {"template": "marketing.tagline", "run": "r1"},
    }
    return Job.objects.create(**{**base, **fields})


def _assert_same(serializer_class: type[JobSerializer], job: Job) -> None:
    serializer = serializer_class(job, context={"request": _request(), "live_queues": set()})
    by_hand = serializer.data
    by_fields = serializer_class(job, context={"request": _request(), "live_queues": set()})
    assert dict(by_hand) == dict(by_fields.to_representation_by_fields(job))
    assert list(by_hand) == serializer_class.Meta.fields  # the same keys, in the documented order


def test_a_queued_job_reads_the_same_as_drf_would_write_it(tenant) -> None:  # noqa: ANN001
    _assert_same(JobSerializer, _job(tenant))


def test_a_succeeded_job_with_artifacts_and_a_local_model_reads_the_same(tenant) -> None:  # noqa: ANN001
    now = timezone.now()
    job = _job(
        tenant,
        state=JobState.SUCCEEDED,
        model_id="/srv/models/my-llama",  # a local folder: shown as local:<name>, never the path
        started_at=now - timedelta(seconds=3),
        finished_at=now,
        progress=1.0,
        progress_message="done",
        attempts=2,
        result={"text": "Crumb & Co.", "metadata": {"model_id": "/srv/models/my-llama", "completion_tokens": 4}},
    )
    artifact = Artifact(job=job, index=0, filename="a.png", content_type="image/png", size=3, sha256="ab" * 32)
    artifact.file.save("a.png", ContentFile(b"png"), save=False)
    artifact.save()
    _assert_same(JobSerializer, job)
    assert JobSerializer(job, context={"request": _request()}).data["model_id"] == "local:my-llama"


def test_a_failed_job_with_a_path_in_its_error_reads_the_same(tenant) -> None:  # noqa: ANN001
    job = _job(
        tenant,
        state=JobState.FAILED,
        error_code="internal_error",
        error_message="OSError: /srv/models/x/config.json is missing",
        finished_at=timezone.now(),
    )
    _assert_same(JobSerializer, job)


def test_the_accepted_answer_with_its_warning_reads_the_same(tenant) -> None:  # noqa: ANN001
    job = _job(tenant, queue="gpu")  # no live worker consumes it: the answer carries a warning
    _assert_same(JobAcceptedSerializer, job)
    warnings = JobAcceptedSerializer(job, context={"request": _request(), "live_queues": set()}).data["warnings"]
    assert [w["code"] for w in warnings] == ["no_worker_for_queue"]
