"""The Job row is the source of truth for a generation; Artifacts are its stored files."""

from __future__ import annotations

import uuid

from django.db import models


class JobState(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class Job(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="jobs")
    api_key = models.ForeignKey("accounts.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    generator = models.CharField(max_length=64, db_index=True)
    plugin_version = models.CharField(max_length=64, blank=True)
    model_id = models.CharField(max_length=300, blank=True)
    params = models.JSONField(default=dict)
    queue = models.CharField(max_length=64)
    origin = models.JSONField(default=dict, blank=True, help_text="Where the job came from (template, recipe run).")
    webhook_url = models.URLField(max_length=2000, blank=True)

    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.QUEUED, db_index=True)
    progress = models.FloatField(default=0.0)
    progress_message = models.CharField(max_length=200, blank=True)
    cancel_requested = models.BooleanField(default=False)
    result = models.JSONField(null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Claims so far; the current one fences every write.")
    worker = models.CharField(max_length=200, blank=True)
    device = models.CharField(max_length=32, blank=True)
    lease_expires_at = models.DateTimeField(
        null=True, blank=True, help_text="A running job whose worker stops renewing this is re-queued."
    )
    dispatch_count = models.PositiveIntegerField(default=0, help_text="Times the broker was rung for this job.")
    steps = models.PositiveIntegerField(
        default=1, help_text="Engine steps the job takes at most (its plugin's `expected_steps`): claim order."
    )
    usage = models.JSONField(default=dict, blank=True, help_text="Metered use: tokens, megapixel-steps, seconds.")
    idempotency_key = models.CharField(max_length=200, blank=True)
    request_hash = models.CharField(max_length=64, blank=True)
    batch_id = models.UUIDField(null=True, blank=True, db_index=True)

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["tenant", "-created_at"]),
            models.Index(fields=["state", "queue"]),
            models.Index(fields=["state", "lease_expires_at"]),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="unique_idempotency_key_per_tenant",
            )
        ]

    def __str__(self) -> str:
        return f"{self.generator} {self.id} ({self.state})"

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


def artifact_path(artifact: Artifact, filename: str) -> str:
    return f"artifacts/{artifact.job.tenant_id}/{artifact.job_id}/{artifact.index:02d}-{filename}"


class Artifact(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="artifacts")
    index = models.PositiveSmallIntegerField(default=0)
    file = models.FileField(upload_to=artifact_path, max_length=500)
    filename = models.CharField(max_length=200)
    content_type = models.CharField(max_length=100)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "index"]
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="unique_artifact_index")]

    def __str__(self) -> str:
        return self.filename


class WorkerStatus(models.Model):
    """What a worker process last reported: its devices, the queues it served and its model cache."""

    name = models.CharField(max_length=200, unique=True)
    queues = models.JSONField(default=list, blank=True)
    devices = models.JSONField(default=list, blank=True)
    cache = models.JSONField(default=dict, blank=True)
    engines = models.JSONField(default=list, blank=True, help_text="Each serving engine's capacity and load.")
    started_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        verbose_name_plural = "worker statuses"

    def __str__(self) -> str:
        return self.name
