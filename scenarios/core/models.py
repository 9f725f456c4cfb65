"""Templates (versioned), recipes, and runs: a run is one template or one recipe turned into ordinary jobs."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q


class Template(models.Model):
    """The identity of a template; what it says lives in its versions. `tenant` empty means global."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(
        "accounts.Tenant",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="Empty for a global template (managed by admins); set for a tenant's private template.",
    )
    scenario = models.CharField(max_length=32, db_index=True, help_text="Slug of an installed scenario app.")
    slug = models.SlugField(max_length=80)
    latest_version = models.PositiveIntegerField(default=0, editable=False)
    is_active = models.BooleanField(default=True, help_text="Inactive templates are hidden and cannot run.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["scenario", "slug"]
        constraints = [
            models.UniqueConstraint(
                fields=["scenario", "slug"], condition=Q(tenant__isnull=True), name="unique_global_template_slug"
            ),
            models.UniqueConstraint(fields=["tenant", "scenario", "slug"], name="unique_tenant_template_slug"),
        ]

    def __str__(self) -> str:
        owner = self.tenant.slug if self.tenant_id else "global"
        return f"{self.scenario}/{self.slug} ({owner})"

    @property
    def latest(self) -> TemplateVersion:
        return self.versions.get(version=self.latest_version)


class TemplateVersion(models.Model):
    """One immutable edit of a template: jobs record the version they came from."""

    template = models.ForeignKey(Template, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    generator = models.CharField(max_length=64)
    prompts = models.JSONField(help_text="Generator param name → Jinja template rendered from the variables.")
    variables = models.JSONField(default=list, help_text="Typed variables: name, type, description, bounds…")
    default_params = models.JSONField(default=dict, blank=True)
    allowed_overrides = models.JSONField(default=list, blank=True, help_text="Params a run may override.")
    output_schema = models.JSONField(null=True, blank=True, help_text="JSON Schema the text output must match.")
    sample_variables = models.JSONField(default=dict, blank=True, help_text="Used by tests and the admin preview.")
    content_hash = models.CharField(max_length=64, editable=False)
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["template", "-version"]
        constraints = [models.UniqueConstraint(fields=["template", "version"], name="unique_template_version")]

    def __str__(self) -> str:
        return f"{self.template.scenario}/{self.template.slug} v{self.version}"


class Recipe(models.Model):
    """A chain of global templates across media; each step's variables are rendered from earlier outputs."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    scenario = models.CharField(max_length=32, db_index=True, help_text="Slug of an installed scenario app.")
    slug = models.SlugField(max_length=80, unique=True)
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    variables = models.JSONField(default=list, help_text="The run's own typed inputs.")
    steps = models.JSONField(default=list, help_text="[{name, template: 'scenario/slug', variables: {…}, params}]")
    sample_variables = models.JSONField(default=dict, blank=True)
    version = models.PositiveIntegerField(default=1, editable=False)
    content_hash = models.CharField(max_length=64, editable=False)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["scenario", "slug"]

    def __str__(self) -> str:
        return f"{self.scenario}/{self.slug} v{self.version}"


class RunState(models.TextChoices):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Run(models.Model):
    """One template run or recipe run; its steps' jobs are ordinary jobs."""

    class Kind(models.TextChoices):
        TEMPLATE = "template"
        RECIPE = "recipe"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="+")
    api_key = models.ForeignKey("accounts.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    recipe = models.ForeignKey(Recipe, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    recipe_version = models.PositiveIntegerField(null=True, blank=True)
    steps_definition = models.JSONField(default=list, help_text="The recipe's steps as they were when the run began.")
    variables = models.JSONField(default=dict)
    webhook_url = models.URLField(max_length=2000, blank=True)
    state = models.CharField(max_length=16, choices=RunState.choices, default=RunState.RUNNING, db_index=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    failed_step = models.CharField(max_length=80, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} run {self.id} ({self.state})"

    @property
    def is_terminal(self) -> bool:
        return self.state != RunState.RUNNING


class RunStep(models.Model):
    """One template of a run: its job, the repair job if the structured output needed one, and the output."""

    class State(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        REPAIRING = "repairing"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    index = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=80)
    template_version = models.ForeignKey(TemplateVersion, on_delete=models.PROTECT, related_name="+")
    param_overrides = models.JSONField(default=dict, blank=True)
    variables = models.JSONField(null=True, blank=True, help_text="Set when the step is submitted.")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    repair_job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    output = models.JSONField(null=True, blank=True, help_text="{text, data, artifacts} once the step succeeded.")
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)

    class Meta:
        ordering = ["run", "index"]
        constraints = [models.UniqueConstraint(fields=["run", "index"], name="unique_run_step_index")]

    def __str__(self) -> str:
        return f"step {self.index} {self.name} ({self.state})"
