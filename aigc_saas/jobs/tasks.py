"""Celery tasks take ids, are safe to run twice, and only call services."""

import os

from celery import shared_task
from celery.signals import celeryd_after_setup, worker_process_init

from aigc_saas.jobs import runtime, services, webhooks


@shared_task(name="aigc.run_job", acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: str) -> str:
    return runtime.execute_job(job_id)


@shared_task(name="aigc.requeue_stale_jobs")
def requeue_stale_jobs() -> dict[str, int]:
    return services.requeue_stale_jobs()


@shared_task(name="aigc.deliver_webhook", bind=True, max_retries=5, acks_late=True)
def deliver_webhook(self, job_id: str) -> int | None:  # noqa: ANN001
    try:
        return webhooks.deliver(job_id)
    except webhooks.DeliveryFailed as exc:
        raise self.retry(exc=exc, countdown=min(2**self.request.retries * 5, 300)) from None


@celeryd_after_setup.connect
def remember_consumed_queues(sender, instance, **kwargs) -> None:  # noqa: ANN001
    # The parent knows its queues; prefork children inherit the environment, so their reports can name them.
    os.environ["AIGC_WORKER_CONSUMES"] = ",".join(sorted(instance.app.amqp.queues.consume_from))


@worker_process_init.connect
def report_devices_at_start(**kwargs) -> None:
    runtime.heartbeat()
