"""Webhook attempts (`aigc.deliver_webhook`, queued when a delivery row is due) and the outbox sweeper (beat:
`resend-pending-webhooks`). Tasks take ids, are safe to run twice, and only call services."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.dispatch import receiver

from aigc_saas.jobs.signals import job_finished
from aigc_saas.webhooks import services
from aigc_saas.webhooks.signals import delivery_due


@shared_task(name="aigc.deliver_webhook", bind=True, max_retries=None, acks_late=True)
def deliver_webhook(self, delivery_id: int) -> None:  # noqa: ANN001
    """One attempt of a WebhookDelivery row; a transient failure retries (Celery retry, with backoff) as the
    next attempt's own row. The attempt count and the backoff live in the rows, not in the message."""
    following = services.attempt_delivery(int(delivery_id))
    if following is not None:
        raise self.retry(args=[following.pk], countdown=services.countdown(following))


@receiver(job_finished)
def webhook_for_finished_job(sender: Any, job: Any, **kwargs: Any) -> None:
    """The outbox row for a finished job's webhook, sent on commit (jobs never import webhooks)."""
    services.enqueue_webhook(job)


@receiver(delivery_due)
def queue_attempt(sender: Any, delivery_id: int, countdown: float = 0, **kwargs: Any) -> None:
    deliver_webhook.apply_async(args=[delivery_id], countdown=max(countdown, 0))


@shared_task(name="aigc.resend_pending_webhooks")
def resend_pending_webhooks() -> int:
    return services.resend_pending_webhooks()
