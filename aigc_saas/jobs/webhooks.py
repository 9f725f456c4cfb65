"""Compatibility: webhooks live in `aigc_saas.webhooks` (policy, pinned delivery, a row per attempt)."""

from __future__ import annotations

from aigc_saas.webhooks.policy import check_webhook_url
from aigc_saas.webhooks.services import enqueue_webhook, job_event, sign

__all__ = ["check_webhook_url", "deliver", "enqueue_webhook", "job_event", "sign"]


def deliver(job_id: str) -> int | None:
    """One synchronous attempt for a job's webhook (a new delivery row); the receiver's status code, or None
    when nothing was answered (refused, unreachable: see the row's error). A retry, if any, stays pending."""
    from django.utils import timezone

    from aigc_saas.jobs.models import Job
    from aigc_saas.webhooks.models import WebhookDelivery
    from aigc_saas.webhooks.services import attempt_delivery

    job = Job.objects.filter(pk=job_id).first()
    if job is None or not job.webhook_url:
        return None
    delivery = WebhookDelivery.objects.create(job=job, url=job.webhook_url, due_at=timezone.now())
    attempt_delivery(delivery.pk)
    delivery.refresh_from_db()
    return delivery.response_code
