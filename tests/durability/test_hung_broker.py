"""A broker that accepts connections and never answers does not hang a submission: the job is recorded, the
client gets its 202 within a few seconds, and the sweep rings the job's doorbell once the broker answers again."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from django.utils import timezone

from aigc_saas.celery import app as celery_app
from aigc_saas.jobs import services
from aigc_saas.jobs.models import Job, WorkerStatus
from aigc_saas.stack import free_port

pytestmark = pytest.mark.django_db(transaction=True)  # the doorbell rings after commit


def use_broker(url: str) -> None:
    """Point this process's Celery app at `url`, dropping its pooled connections to the old one."""
    celery_app.conf.broker_url = url
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.fixture
def broker_hangs(hung_redis) -> Iterator[None]:  # noqa: ANN001
    real = celery_app.conf.broker_url
    use_broker(hung_redis.url)
    yield
    use_broker(real)


def test_a_submission_answers_quickly_while_the_broker_hangs_and_the_sweep_rings_later(
    acme, broker_hangs, hung_redis, settings
) -> None:  # noqa: ANN001
    started = time.monotonic()
    response = acme.post(
        "/api/v1/jobs", json.dumps({"generator": "transformers-text", "params": {"prompt": "Hi"}}), "application/json"
    )
    elapsed = time.monotonic() - started

    print(f"submission with a hung broker answered {response.status_code} in {elapsed:.2f} s")
    assert response.status_code == 202
    assert elapsed < settings.AIGC_BROKER_TIMEOUT + 3
    assert hung_redis.accepted, "the broker was really asked"
    job = Job.objects.get(pk=response.json()["id"])
    assert (job.state, job.dispatch_count, job.dispatched_at) == ("queued", 0, None)  # not rung: the sweep will

    use_broker(settings.CELERY_BROKER_URL)  # the broker is back
    WorkerStatus.objects.create(name="w1", queues=["cpu"], updated_at=timezone.now())
    settings.AIGC_QUEUED_REDISPATCH_SECONDS = 0
    assert services.requeue_stale_jobs()["redispatched"] == 1
    job.refresh_from_db()
    assert job.dispatch_count == 1 and job.dispatched_at is not None


def test_a_sweep_while_the_broker_hangs_finishes_and_leaves_the_jobs_queued(tenant, broker_hangs, settings) -> None:  # noqa: ANN001
    jobs = [services.submit_job(tenant, "transformers-text", {"prompt": f"p{i}"}) for i in range(3)]
    WorkerStatus.objects.create(name="w1", queues=["cpu"], updated_at=timezone.now())
    settings.AIGC_QUEUED_REDISPATCH_SECONDS = 0

    started = time.monotonic()
    outcome = services.requeue_stale_jobs()
    elapsed = time.monotonic() - started

    print(f"sweep over 3 jobs with a hung broker took {elapsed:.2f} s: {outcome}")
    assert elapsed < 3 * (settings.AIGC_BROKER_TIMEOUT + 2)
    assert set(Job.objects.filter(pk__in=[j.pk for j in jobs]).values_list("state", "dispatch_count")) == {
        ("queued", 0)
    }


def test_a_submission_answers_at_once_when_the_broker_refuses_connections(acme, settings) -> None:  # noqa: ANN001
    real = celery_app.conf.broker_url
    use_broker(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there: dispatch fails after commit
    try:
        started = time.monotonic()
        response = acme.post(
            "/api/v1/jobs",
            json.dumps({"generator": "transformers-text", "params": {"prompt": "x"}}),
            "application/json",
        )
        elapsed = time.monotonic() - started
    finally:
        use_broker(real)

    print(f"submission with a refusing broker answered {response.status_code} in {elapsed:.2f} s")
    assert response.status_code == 202 and elapsed < 5
    assert Job.objects.filter(pk=response.json()["id"], state="queued", dispatch_count=0).exists()
