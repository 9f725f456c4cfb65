"""Webhook services: the outbox (a pending row per attempt, sent on commit), one attempt, retries, the sweeper.

Signature header: `X-AIGC-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the tenant's
webhook secret>`. Receivers recompute it and reject stale timestamps.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from aigc_saas.jobs.models import Job
from aigc_saas.validation import scrub_model_ids, scrub_paths
from aigc_saas.webhooks import transport
from aigc_saas.webhooks.models import DeliveryStatus, WebhookDelivery
from aigc_saas.webhooks.policy import ResolveFailed, UrlRefused, check_target
from aigc_saas.webhooks.signals import delivery_due

log = logging.getLogger(__name__)
MAX_ERROR_CHARS = 1000


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def job_event(job: Job) -> dict[str, Any]:
    return {
        "type": f"job.{job.state}",
        "job": {
            "id": str(job.pk),
            "generator": job.generator,
            "state": job.state,
            "progress": job.progress,
            "result": scrub_model_ids(job.result),  # as the API shows it: no server paths
            "error": {"code": job.error_code, "message": scrub_paths(job.error_message)} if job.error_code else None,
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
            "url": f"/api/v1/jobs/{job.pk}",
        },
    }


def backoff_seconds(attempt: int) -> int:
    """Wait before attempt `attempt + 1`: 5 s, 10 s, 20 s, ... capped at 5 minutes."""
    return min(5 * 2 ** (attempt - 1), 300)


def _send(delivery_id: int, countdown: float = 0) -> None:
    """Ask for the attempt (webhooks.tasks queues it); a row nobody could queue stays pending for the sweep."""
    for receiver, error in delivery_due.send_robust(
        sender=WebhookDelivery, delivery_id=delivery_id, countdown=countdown
    ):
        if isinstance(error, Exception):
            log.error(
                "could not queue webhook delivery %s (%r: %s); the sweeper will re-send it",
                delivery_id,
                receiver,
                error,
                exc_info=error,
            )


def enqueue_webhook(job: Job) -> None:
    """Write the pending delivery in the current transaction; ring the worker once it commits (outbox)."""
    if not job.webhook_url:
        return
    delivery = WebhookDelivery.objects.create(job=job, url=job.webhook_url, attempt=1, due_at=timezone.now())
    transaction.on_commit(lambda: _send(delivery.pk))


def redeliver(job: Job) -> WebhookDelivery | None:
    """A new attempt for a job's webhook (the admin's "redeliver" action), sent once committed."""
    if not job.webhook_url:
        return None
    with transaction.atomic():
        last = WebhookDelivery.objects.filter(job=job).aggregate(n=Max("attempt"))["n"] or 0
        delivery = WebhookDelivery.objects.create(job=job, url=job.webhook_url, attempt=last + 1, due_at=timezone.now())
        transaction.on_commit(lambda: _send(delivery.pk))
    return delivery


def _claim(delivery_id: int) -> WebhookDelivery | None:
    """Take a pending attempt; a second delivery of the same task (or a sweep) finds nothing to do."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.AIGC_WEBHOOK_TIMEOUT + 60)
    claimed = (
        WebhookDelivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING)
        .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=stale))
        .update(claimed_at=now)
    )
    if not claimed:
        return None
    return WebhookDelivery.objects.select_related("job__tenant").get(pk=delivery_id)


def _finish(delivery: WebhookDelivery, status: str, error: str = "", **fields: Any) -> None:
    fields.update(status=status, error=error[:MAX_ERROR_CHARS], finished_at=timezone.now())
    WebhookDelivery.objects.filter(pk=delivery.pk).update(**fields)


def _retry_or_fail(delivery: WebhookDelivery, error: str, **fields: Any) -> WebhookDelivery | None:
    """A transient failure: this row is `retrying` and the next attempt a new pending row, or `failed` at the end."""
    if delivery.attempt >= settings.AIGC_WEBHOOK_MAX_ATTEMPTS:
        _finish(delivery, DeliveryStatus.FAILED, f"{error} (gave up after {delivery.attempt} attempts)", **fields)
        return None
    wait = backoff_seconds(delivery.attempt)
    with transaction.atomic():
        _finish(delivery, DeliveryStatus.RETRYING, f"{error} (next attempt in {wait} s)", **fields)
        return WebhookDelivery.objects.create(
            job=delivery.job,
            url=delivery.url,
            attempt=delivery.attempt + 1,
            due_at=timezone.now() + timedelta(seconds=wait),
        )


def attempt_delivery(delivery_id: int) -> WebhookDelivery | None:
    """Make one attempt; returns the next attempt's pending row when a transient failure calls for one."""
    delivery = _claim(delivery_id)
    if delivery is None:
        return None
    job = delivery.job
    body = json.dumps(job_event(job), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "aigc-saas-webhooks/1",
        "X-AIGC-Event": f"job.{job.state}",
        "X-AIGC-Delivery": str(delivery.pk),
        "X-AIGC-Attempt": str(delivery.attempt),
        "X-AIGC-Signature": sign(job.tenant.webhook_secret, int(time.time()), body),
    }
    try:
        target = check_target(delivery.url)  # again at delivery: resolved now, and this address is used
    except UrlRefused as exc:
        _finish(delivery, DeliveryStatus.FAILED, exc.message)
        return None
    except ResolveFailed as exc:
        if exc.transient:
            return _retry_or_fail(delivery, str(exc))
        _finish(delivery, DeliveryStatus.FAILED, str(exc))
        return None
    try:
        response = transport.post(target, body, headers, timeout=settings.AIGC_WEBHOOK_TIMEOUT)
    except transport.TransientError as exc:
        return _retry_or_fail(delivery, str(exc), address=target.ip)
    except transport.PermanentError as exc:
        _finish(delivery, DeliveryStatus.FAILED, str(exc), address=target.ip)
        return None
    code, fields = response.status, {"response_code": response.status, "duration_ms": response.duration_ms}
    fields["address"] = target.ip
    if 200 <= code < 300:
        _finish(delivery, DeliveryStatus.SUCCEEDED, **fields)
    elif 300 <= code < 400:
        _finish(
            delivery, DeliveryStatus.FAILED, f"the receiver redirected ({code}); redirects are not followed", **fields
        )
    elif code >= 500 or code in (408, 425, 429):
        return _retry_or_fail(delivery, f"the receiver answered {code}", **fields)
    else:
        _finish(delivery, DeliveryStatus.FAILED, f"the receiver answered {code}", **fields)
    return None


def countdown(delivery: WebhookDelivery) -> float:
    return max((delivery.due_at - timezone.now()).total_seconds(), 0)


def resend_pending_webhooks() -> int:
    """Re-send attempts still pending `AIGC_WEBHOOK_RESEND_SECONDS` after they were due (their task was lost:
    broker down at commit, worker killed mid-attempt). Safe beside a live task: the claim takes each row once."""
    now = timezone.now()
    due = now - timedelta(seconds=settings.AIGC_WEBHOOK_RESEND_SECONDS)
    stale = now - timedelta(seconds=settings.AIGC_WEBHOOK_TIMEOUT + 60)
    pending = list(
        WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, due_at__lt=due)
        .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=stale))
        .values_list("pk", flat=True)[:1000]
    )
    for delivery_id in pending:
        _send(delivery_id)
    return len(pending)


def deliver_now(job_id: Any) -> int | None:
    """One synchronous attempt for a job's webhook (a new delivery row); the receiver's status code, or None
    when nothing was answered (refused, unreachable: see the row's error). A retry, if any, stays pending."""
    job = Job.objects.filter(pk=job_id).first()
    if job is None or not job.webhook_url:
        return None
    delivery = WebhookDelivery.objects.create(job=job, url=job.webhook_url, due_at=timezone.now())
    attempt_delivery(delivery.pk)
    delivery.refresh_from_db()
    return delivery.response_code
