"""A row per webhook attempt: the delivery log the admin shows, and the outbox the sweeper re-sends from."""

from __future__ import annotations

from django.db import models


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"  # written, not yet attempted (or its task was lost: the sweeper re-sends it)
    SUCCEEDED = "succeeded"  # the receiver answered 2xx
    FAILED = "failed"  # a permanent failure, or the last attempt; nothing follows
    RETRYING = "retrying"  # a transient failure; the next attempt is its own pending row


class WebhookDelivery(models.Model):
    job = models.ForeignKey("jobs.Job", on_delete=models.CASCADE, related_name="webhook_deliveries")
    url = models.URLField(max_length=2000)
    attempt = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    response_code = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    address = models.CharField(max_length=64, blank=True, help_text="The checked address the attempt connected to.")
    created_at = models.DateTimeField(auto_now_add=True)
    due_at = models.DateTimeField(help_text="When this attempt should be sent (after its backoff).")
    claimed_at = models.DateTimeField(null=True, blank=True, help_text="When a worker took this attempt.")
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-attempt"]
        indexes = [models.Index(fields=["status", "due_at"])]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"webhook of job {self.job_id}, attempt {self.attempt}: {self.status}"
