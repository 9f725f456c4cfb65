"""Celery tasks take ids, are safe to run twice, and only call services."""

import os

from celery import shared_task
from celery.signals import celeryd_after_setup, worker_process_init

from aigc_saas.jobs import runtime, services


@shared_task(name="aigc.run_job", acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: str) -> str:
    return runtime.execute_job(job_id)


@shared_task(name="aigc.requeue_stale_jobs")
def requeue_stale_jobs() -> dict[str, int]:
    return services.requeue_stale_jobs()


@shared_task(name="aigc.deliver_webhook", bind=True, max_retries=None, acks_late=True)
def deliver_webhook(self, delivery_id: int) -> None:  # noqa: ANN001
    """One attempt of a WebhookDelivery row; a transient failure retries (Celery retry, with backoff) as the
    next attempt's own row. The attempt count and the backoff live in the rows, not in the message."""
    from aigc_saas.webhooks import services as webhook_services

    following = webhook_services.attempt_delivery(int(delivery_id))
    if following is not None:
        raise self.retry(args=[following.pk], countdown=webhook_services.countdown(following))


@celeryd_after_setup.connect
def remember_consumed_queues(sender, instance, **kwargs) -> None:  # noqa: ANN001
    # The parent knows its queues; prefork children inherit the environment, so their reports can name them.
    os.environ["AIGC_WORKER_CONSUMES"] = ",".join(sorted(instance.app.amqp.queues.consume_from))


@worker_process_init.connect
def report_devices_at_start(**kwargs) -> None:
    runtime.heartbeat()
