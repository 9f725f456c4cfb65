"""The outbox sweeper (beat: `resend-pending-webhooks`); the delivery task is `aigc.deliver_webhook` in jobs."""

from celery import shared_task

from aigc_saas.webhooks import services


@shared_task(name="aigc.resend_pending_webhooks")
def resend_pending_webhooks() -> int:
    return services.resend_pending_webhooks()
