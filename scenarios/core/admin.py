"""Admin: browse and edit templates (an edit saves a new version), preview prompts, follow recipe runs."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from aigc_saas.errors import ServiceError
from scenarios.core import templates
from scenarios.core.models import Recipe, Run, RunStep, Template, TemplateVersion

CONTENT_FIELDS = list(templates.TemplateContent.model_fields)
JSON_FIELDS = {"prompts", "variables", "default_params", "allowed_overrides", "output_schema", "sample_variables"}


class TemplateForm(forms.ModelForm):
    """The template's identity plus the content of a new version, pre-filled from the latest one."""

    title = forms.CharField(max_length=200)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)
    generator = forms.CharField(max_length=64)
    prompts = forms.JSONField(widget=forms.Textarea(attrs={"rows": 10, "cols": 100}))
    variables = forms.JSONField(widget=forms.Textarea(attrs={"rows": 10, "cols": 100}), required=False)
    default_params = forms.JSONField(required=False)
    allowed_overrides = forms.JSONField(required=False)
    output_schema = forms.JSONField(required=False)
    sample_variables = forms.JSONField(widget=forms.Textarea(attrs={"rows": 5, "cols": 100}), required=False)

    class Meta:
        model = Template
        fields = ["tenant", "scenario", "slug", "is_active"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and self.instance.latest_version:
            for name, value in templates.version_content(self.instance.latest).items():
                self.initial[name] = value

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        content = {name: data.get(name) for name in CONTENT_FIELDS}
        for name in ("variables", "default_params", "sample_variables"):
            content[name] = content[name] or ([] if name == "variables" else {})
        content["description"] = content["description"] or ""
        try:
            self.content = templates.check_content(content)
        except ServiceError as exc:
            raise ValidationError(exc.message) from None
        return data


class VersionInline(admin.TabularInline):
    model = TemplateVersion
    extra = 0
    can_delete = False
    fields = ["version", "title", "generator", "created_by", "created_at"]
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return False


class TemplateAdmin(admin.ModelAdmin):
    form = TemplateForm
    list_display = ["slug", "scenario", "title", "latest_version", "tenant", "is_active", "updated_at"]
    list_filter = ["scenario", "is_active", ("tenant", admin.EmptyFieldListFilter)]
    search_fields = ["slug", "versions__title"]
    readonly_fields = ["latest_version", "preview"]
    inlines = [VersionInline]

    def get_fieldsets(self, request, obj=None):  # noqa: ANN001, ANN201
        return [
            (None, {"fields": ["tenant", "scenario", "slug", "is_active", "latest_version"]}),
            ("Content (saving a change creates a new version)", {"fields": CONTENT_FIELDS}),
            ("Preview with the sample variables", {"fields": ["preview"]}),
        ]

    @admin.display(description="title")
    def title(self, obj: Template) -> str:
        return obj.latest.title if obj.latest_version else "-"

    @admin.display(description="rendered params")
    def preview(self, obj: Template) -> str:
        if not obj.pk or not obj.latest_version:
            return "-"
        version = obj.latest
        try:
            params = templates.render_params(version, version.sample_variables, {})
        except ServiceError as exc:
            return format_html("<strong>does not render:</strong> {}", exc.message)
        return format_html(
            "<pre style='white-space:pre-wrap'>{}</pre>", json.dumps(params, indent=2, ensure_ascii=False)
        )

    def save_model(self, request, obj: Template, form: TemplateForm, change: bool) -> None:  # noqa: ANN001
        super().save_model(request, obj, form, change)
        obj.refresh_from_db()
        templates.edit_template(obj, form.content, created_by=str(request.user))


class TemplateVersionAdmin(admin.ModelAdmin):
    list_display = ["template", "version", "title", "generator", "created_by", "created_at"]
    list_filter = ["template__scenario", "generator"]
    readonly_fields = [f.name for f in TemplateVersion._meta.fields]

    def has_add_permission(self, request) -> bool:  # noqa: ANN001
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return False  # versions are immutable: jobs point at them


class RecipeAdmin(admin.ModelAdmin):
    list_display = ["slug", "scenario", "title", "version", "is_active", "updated_at"]
    list_filter = ["scenario", "is_active"]
    readonly_fields = ["scenario", "slug", "version", "variables", "steps", "sample_variables", "content_hash"]
    fields = ["scenario", "slug", "title", "description", "is_active", *readonly_fields[2:]]


class RunStepInline(admin.TabularInline):
    model = RunStep
    extra = 0
    can_delete = False
    fields = [
        "index",
        "name",
        "template_version",
        "state",
        "job_link",
        "repair_job_link",
        "error_code",
        "error_message",
    ]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return False

    def _link(self, job: Any) -> str:
        if job is None:
            return "-"
        url = reverse("admin:jobs_job_change", args=[job.pk])
        return format_html('<a href="{}">{} ({})</a>', url, job.pk, job.state)

    @admin.display(description="job")
    def job_link(self, obj: RunStep) -> str:
        return self._link(obj.job)

    @admin.display(description="repair job")
    def repair_job_link(self, obj: RunStep) -> str:
        return self._link(obj.repair_job)


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["id", "tenant", "kind", "recipe", "state", "failed_step", "created_at", "finished_at"]
    list_filter = ["state", "kind", "recipe", "tenant"]
    search_fields = ["id", "tenant__slug", "recipe__slug"]
    inlines = [RunStepInline]
    readonly_fields = [f.name for f in Run._meta.fields] + ["outputs"]

    def has_add_permission(self, request) -> bool:  # noqa: ANN001
        return False

    @admin.display(description="step outputs")
    def outputs(self, obj: Run) -> str:
        rows = ((s.name, json.dumps(s.output, ensure_ascii=False)[:2000]) for s in obj.steps.all())
        return format_html_join("", "<p><strong>{}</strong>: {}</p>", rows)


admin.site.register(Template, TemplateAdmin)
admin.site.register(TemplateVersion, TemplateVersionAdmin)
admin.site.register(Recipe, RecipeAdmin)
