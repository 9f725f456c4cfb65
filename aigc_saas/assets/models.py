"""An uploaded input (image or audio) of one tenant, stored next to the artifacts."""

from __future__ import annotations

import uuid
from pathlib import PurePosixPath

from django.db import models
from django.utils import timezone

EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "audio/wav": ".wav",
    "audio/flac": ".flac",
    "audio/mpeg": ".mp3",
    "audio/ogg": ".ogg",
}


class AssetKind(models.TextChoices):
    IMAGE = "image"
    AUDIO = "audio"


def asset_path(asset: Asset, filename: str) -> str:
    # The name on disk comes from the id and the sniffed type, never from the client's file name.
    return f"assets/{asset.tenant_id}/{asset.id}{EXTENSIONS.get(asset.content_type, PurePosixPath(filename).suffix)}"


class Asset(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="assets")
    kind = models.CharField(max_length=8, choices=AssetKind.choices)
    content_type = models.CharField(max_length=40, help_text="Sniffed from the bytes, never the client's claim.")
    filename = models.CharField(max_length=200, blank=True, help_text="The client's file name, for display only.")
    file = models.FileField(upload_to=asset_path, max_length=500)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    duration = models.FloatField(null=True, blank=True, help_text="Seconds.")
    sample_rate = models.PositiveIntegerField(null=True, blank=True)
    channels = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.id} ({self.content_type})"
