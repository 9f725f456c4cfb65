"""Sent with `delivery_id=` and `countdown=` once a WebhookDelivery row is committed as due: webhooks.tasks
queues the attempt, so services never import the task layer (the same shape as `job_queued`)."""

from django.dispatch import Signal

delivery_due = Signal()
