"""What admins change about each plugin; the plugin's code declares the shape, this row stores the values."""

from __future__ import annotations

from django.db import models


class PluginRecord(models.Model):
    name = models.CharField(max_length=64, unique=True)
    modality = models.CharField(max_length=16)
    description = models.TextField(blank=True)
    distribution = models.CharField(max_length=200, blank=True)
    version = models.CharField(max_length=64, blank=True)
    entry_point = models.CharField(max_length=300, blank=True)
    installed = models.BooleanField(default=True, help_text="Found by the last registry sync.")
    enabled = models.BooleanField(default=True, help_text="Disabled plugins refuse new jobs.")
    model_id = models.CharField(
        max_length=300, blank=True, help_text="Default model for this deployment; blank uses the plugin's default."
    )
    config = models.JSONField(default=dict, blank=True, help_text="Other settings of the plugin's config model.")
    secrets = models.JSONField(
        default=dict,
        blank=True,
        editable=False,
        help_text="Values of the config's secret fields: write-only in admin, never serialised, passed to the plugin.",
    )
    default_params = models.JSONField(default=dict, blank=True, help_text="Params merged under each job's params.")
    queue = models.CharField(max_length=64, blank=True, help_text="Blank: chosen from the plugin's hardware needs.")
    params_schema = models.JSONField(default=dict, blank=True, editable=False)
    config_schema = models.JSONField(default=dict, blank=True, editable=False)
    synced_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class PluginProblemRecord(models.Model):
    """A plugin the last sync skipped, and why."""

    entry_point = models.CharField(max_length=300)
    distribution = models.CharField(max_length=200, blank=True)
    code = models.CharField(max_length=32)
    message = models.TextField()
    seen_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["entry_point"]

    def __str__(self) -> str:
        return f"{self.entry_point}: {self.code}"
