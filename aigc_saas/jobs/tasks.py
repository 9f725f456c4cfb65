"""Celery tasks take ids, are safe to run twice, and only call services; ringing the broker lives here too."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import shared_task
from celery.signals import celeryd_after_setup, worker_ready
from django.dispatch import receiver

from aigc_saas.jobs import doorbell, runtime, services
from aigc_saas.jobs.signals import job_queued

log = logging.getLogger(__name__)

# A hung or unreachable broker must not hang a submission: the job is recorded and the sweep rings again later.
BROKER_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


@shared_task(name="aigc.run_job", acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: str, queue: str | None = None) -> str:
    return runtime.execute_job(job_id, queue)


@shared_task(name="aigc.requeue_stale_jobs")
def requeue_stale_jobs() -> dict[str, int]:
    return services.requeue_stale_jobs()


@receiver(job_queued)
def ring_broker(
    sender: Any, job_id: Any, queue: str, counted: bool = False, coalesce: bool = False, **kwargs: Any
) -> bool:
    """The doorbell: the worker reads everything else from the row. False when the broker did not take it.
    `counted`: the row already records this ring (a new job's first), so only a refusal is written.
    `coalesce`: send nothing when a doorbell of the queue is already on its way (aigc_saas.jobs.doorbell); it
    claims this job too. `job_id` None: a ring for the queue, naming no job (a worker's claim that took all it
    could)."""
    if coalesce and doorbell.covered(queue, job_id):
        return True
    try:
        run_job.apply_async(args=[str(job_id or "")], kwargs={"queue": queue}, queue=queue, retry_policy=BROKER_RETRY)
    except Exception as exc:  # noqa: BLE001 - the sweep re-rings jobs the broker never got
        log.warning("could not dispatch job %s (%s); the stale-job sweep will retry", job_id, exc)
        if coalesce:
            doorbell.answered(queue)  # no message is on its way: the next ring must send one
        if counted and job_id:
            services.ring_refused(job_id)
        return False
    if not counted and job_id:
        services.mark_dispatched(job_id)
    return True


@celeryd_after_setup.connect
def remember_consumed_queues(sender, instance, **kwargs) -> None:  # noqa: ANN001
    # Threads (and prefork children) of this worker report the queues it consumes.
    os.environ["AIGC_WORKER_CONSUMES"] = ",".join(sorted(instance.app.amqp.queues.consume_from))


@worker_ready.connect
def start_worker_threads(**kwargs: Any) -> None:
    runtime.start_worker_threads()
