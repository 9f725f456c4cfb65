"""Tenants (organisations) own users, API keys and jobs."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

# What an API key may do. New keys get all of them: the behaviour keys had before scopes existed.
SCOPES = {
    "read": "read jobs, artifacts, generators, templates and usage",
    "submit": "submit and cancel jobs and template or recipe runs",
    "templates": "create, edit and delete the tenant's own templates",
}


def all_scopes() -> list[str]:
    return list(SCOPES)


# New tenants start with the deployment's default quotas; a callable default leaves existing rows alone.
def default_max_jobs_per_day() -> int | None:
    return settings.AIGC_DEFAULT_MAX_JOBS_PER_DAY


def default_max_active_jobs() -> int | None:
    return settings.AIGC_DEFAULT_MAX_ACTIVE_JOBS


class Tenant(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    is_active = models.BooleanField(default=True, help_text="An inactive tenant's keys are refused.")
    webhook_secret = models.CharField(max_length=64, blank=True, help_text="Signs this tenant's webhooks.")
    max_jobs_per_day = models.PositiveIntegerField(
        null=True,
        blank=True,
        default=default_max_jobs_per_day,
        help_text="Jobs this tenant may submit per UTC day; blank means no limit.",
    )
    max_active_jobs = models.PositiveIntegerField(
        null=True,
        blank=True,
        default=default_max_active_jobs,
        help_text="Jobs this tenant may have queued or running at once; blank means no limit.",
    )
    requests_per_second = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="API requests per second each key may make; blank uses AIGC_RATE_LIMIT_PER_SECOND.",
    )
    request_burst = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Requests a key may make at once above that rate; blank uses AIGC_RATE_LIMIT_BURST.",
    )
    submissions_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Job submissions (jobs, template and recipe runs) per minute per key; "
        "blank uses AIGC_SUBMISSIONS_PER_MINUTE.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="tenants")

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner"
        MEMBER = "member"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "user"], name="unique_membership")]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant} ({self.role})"


class ApiKey(models.Model):
    """A key is `aigc_<prefix>_<secret>`; only the SHA-256 of the whole key is stored."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    hashed_key = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)
    scopes = models.JSONField(default=all_scopes, help_text=f"What this key may do: any of {', '.join(SCOPES)}.")
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Blank: the key does not expire.")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} (aigc_{self.prefix}_…)"

    def clean(self) -> None:
        check_scopes(self.scopes)

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and not self.is_expired

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()


def check_scopes(scopes: object) -> list[str]:
    """The scopes as a list, or a ValidationError naming the unknown one."""
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise ValidationError({"scopes": f"`scopes`: must be a list of names from {list(SCOPES)}"})
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ValidationError({"scopes": f"`scopes`: {unknown[0]!r} is not one of {list(SCOPES)}"})
    return [s for s in SCOPES if s in scopes]
