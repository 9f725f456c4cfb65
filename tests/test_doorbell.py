"""One doorbell per queue on its way: a burst of submissions is one broker message, a refused message leaves the
next ring free to send its own, and a real worker whose claims are small still runs every job of a burst."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from django.db import transaction

from aigc_saas.celery import app as celery_app
from aigc_saas.jobs import doorbell, events, services
from aigc_saas.jobs.models import Job
from aigc_saas.jobs.signals import job_queued
from aigc_saas.observability.metrics import broker_queue_lengths
from aigc_saas.plugins.models import PluginRecord
from aigc_saas.stack import free_port
from tests.fixtures.stack import Worker

pytestmark = pytest.mark.django_db(transaction=True)  # rings go out after commit


@pytest.fixture
def queue() -> Iterator[str]:
    name = f"doorbell-{uuid.uuid4().hex[:8]}"
    yield name
    events.client().delete(name, doorbell.key(name))


def ring(queue: str) -> list[bool]:
    """A new job's ring, as a submission sends it after commit."""
    job_id = uuid.uuid4()
    return [rang for _, rang in job_queued.send(sender=Job, job_id=job_id, queue=queue, counted=True, coalesce=True)]


def waiting_messages(queue: str) -> int:
    return dict(broker_queue_lengths([queue]))[queue]


def test_a_burst_of_rings_sends_one_message_until_a_worker_answers_it(queue) -> None:  # noqa: ANN001
    assert [ring(queue) for n in range(5)] == [[True]] * 5  # each job counts as rung
    assert waiting_messages(queue) == 1

    doorbell.answered(queue)  # a worker takes the message and is about to read the queue
    assert ring(queue) == [True]
    assert waiting_messages(queue) == 2  # a job committed after that gets a message of its own


def test_a_message_the_broker_refuses_leaves_the_next_ring_free_to_send(queue) -> None:  # noqa: ANN001
    real = celery_app.conf.broker_url
    celery_app.conf.broker_url, celery_app._pool, celery_app.amqp._producer_pool = (
        f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        None,
        None,
    )
    try:
        assert ring(queue) == [False]
    finally:
        celery_app.conf.broker_url, celery_app._pool, celery_app.amqp._producer_pool = real, None, None
    assert not events.client().exists(doorbell.key(queue))

    assert ring(queue) == [True]
    assert waiting_messages(queue) == 1


@pytest.fixture
def small_claims_worker(django_db_setup, django_db_blocker, tiny_models, tmp_path) -> Iterator[str]:  # noqa: ANN001
    """A worker of its own queue that claims one job per doorbell, with the text plugin's jobs sent there."""
    name = f"doorbell-{uuid.uuid4().hex[:8]}"
    with django_db_blocker.unblock():
        started = Worker(tmp_path / "worker.log", queues=name, AIGC_CLAIM_BATCH="1")
    PluginRecord.objects.filter(name="transformers-text").update(queue=name)
    yield name
    PluginRecord.objects.filter(name="transformers-text").update(queue="")
    started.stop()
    events.client().delete(name, doorbell.key(name))


def test_every_job_of_a_burst_runs_though_one_message_stood_for_them_and_each_claim_takes_one(
    tenant, small_claims_worker
) -> None:  # noqa: ANN001
    with transaction.atomic():  # all six ring together after commit: the first sends, the others are covered
        jobs = [
            services.submit_job(tenant, "transformers-text", {"prompt": f"burst {n}", "max_new_tokens": 4})
            for n in range(6)
        ]
    assert {job.queue for job in jobs} == {small_claims_worker}

    deadline = time.monotonic() + 90  # no sweep runs here: a job no doorbell stood for would stay queued
    states: list[str] = []
    while time.monotonic() < deadline:
        states = list(Job.objects.filter(pk__in=[j.pk for j in jobs]).values_list("state", flat=True))
        if all(state == "succeeded" for state in states):
            break
        time.sleep(0.2)
    assert sorted(states) == ["succeeded"] * 6
    assert Job.objects.filter(pk__in=[j.pk for j in jobs], attempts=1).count() == 6
