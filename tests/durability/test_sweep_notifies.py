"""A job the sweep ends (its worker kept dying) is told like any other: `worker_lost`, the signal recipe runs
follow, and a webhook written to the outbox; a stale attempt can write nothing once a newer one holds the job."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from aigc_saas.errors import Conflict
from aigc_saas.jobs import services
from aigc_saas.jobs.models import Artifact, Job
from aigc_saas.jobs.signals import job_finished
from aigc_saas.webhooks.models import WebhookDelivery
from generators.base import GenerationResult, OutputFile

pytestmark = pytest.mark.django_db


def lapse(job: Job) -> None:
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


def test_a_job_whose_worker_keeps_dying_fails_worker_lost_with_its_webhook_and_signal(
    tenant, settings, django_capture_on_commit_callbacks
) -> None:  # noqa: ANN001
    finished: list[str] = []
    job_finished.connect(receiver := lambda sender, job, **kw: finished.append(job.state), weak=False)
    try:
        job = services.submit_job(tenant, "transformers-text", {"prompt": "x"}, webhook_url="http://127.0.0.1:9/hook")
        for attempt in range(1, settings.AIGC_MAX_ATTEMPTS + 1):
            assert services.claim_job(job.pk, f"worker-{attempt}").attempts == attempt
            lapse(job)
            with django_capture_on_commit_callbacks(execute=True):
                outcome = services.requeue_stale_jobs()
        job.refresh_from_db()
    finally:
        job_finished.disconnect(receiver)

    assert outcome["failed"] == 1
    assert (job.state, job.error_code, job.attempts) == ("failed", "worker_lost", settings.AIGC_MAX_ATTEMPTS)
    assert finished == ["failed"]
    assert WebhookDelivery.objects.filter(job=job).count() == 1


def test_a_stale_attempt_writes_no_result_no_artifact_and_no_progress(tenant, settings) -> None:  # noqa: ANN001
    job = services.submit_job(tenant, "transformers-text", {"prompt": "x"})
    stale = services.claim_job(job.pk, "paused-worker")
    lapse(job)
    current = services.claim_job(job.pk, "second-worker")
    assert (stale.attempts, current.attempts) == (1, 2)

    services.report_progress(stale, 0.9, "stale")
    assert not services.renew_lease(stale)
    picture = OutputFile(filename="a.png", content_type="image/png", data=b"\x89PNG stale")
    with pytest.raises(Conflict):
        services.finish_job(stale, GenerationResult(text="stale", files=[picture]))
    services.fail_job(stale, "internal_error", "the stale attempt failing")

    job.refresh_from_db()
    assert (job.state, job.attempts, job.progress, job.result) == ("running", 2, 0.0, None)
    assert not Artifact.objects.filter(job=job).exists()
    folder = Path(settings.MEDIA_ROOT) / "artifacts" / str(tenant.pk) / str(job.pk)
    assert not folder.exists() or not any(folder.iterdir()), "the stale attempt's file was left behind"
