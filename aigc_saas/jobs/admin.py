import json

from django.contrib import admin, messages
from django.http import FileResponse, Http404, HttpRequest
from django.urls import path, reverse
from django.utils.html import format_html

from aigc_saas.errors import ServiceError
from aigc_saas.jobs.hardware_report import cache_lines, device_lines, mib
from aigc_saas.jobs.models import Artifact, Job, WorkerStatus
from aigc_saas.jobs.services import cancel_job


def artifact_preview(artifact: Artifact) -> str:
    """An image shown, an audio player, or a download link, all served by the admin's own content view."""
    if artifact.pk is None:
        return ""
    url = reverse("admin:jobs_job_artifact_content", args=[artifact.job_id, artifact.pk])
    if artifact.content_type.startswith("image/"):
        return format_html(
            '<a href="{}"><img src="{}" alt="{}" class="aigc-artifact-image" style="max-width: 320px; '
            'max-height: 320px"></a>',
            url,
            url,
            artifact.filename,
        )
    if artifact.content_type.startswith("audio/"):
        return format_html(
            '<audio controls preload="metadata" src="{}" class="aigc-artifact-audio"></audio><br><a href="{}">{}</a>',
            url,
            url,
            artifact.filename,
        )
    return format_html('<a href="{}">{}</a>', url, artifact.filename)


class ArtifactInline(admin.TabularInline):
    model = Artifact
    extra = 0
    can_delete = False
    fields = ["index", "preview", "filename", "content_type", "size", "sha256", "metadata"]
    readonly_fields = fields

    @admin.display(description="preview")
    def preview(self, obj: Artifact) -> str:
        return artifact_preview(obj)

    def has_add_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return False


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "tenant",
        "generator",
        "plugin_version",
        "state",
        "progress",
        "attempts",
        "created_at",
        "finished_at",
    ]
    list_filter = ["state", "generator", "queue", "tenant"]
    search_fields = ["id", "generator", "tenant__slug"]
    date_hierarchy = "created_at"
    inlines = [ArtifactInline]
    actions = ["cancel_selected"]
    fields = [
        "id",
        "tenant",
        "api_key",
        "generator",
        "plugin_version",
        "model_id",
        "queue",
        "origin",
        "state",
        "progress",
        "progress_message",
        "cancel_requested",
        "params_pretty",
        "result_pretty",
        "error_code",
        "error_message",
        "attempts",
        "worker",
        "device",
        "webhook_url",
        "created_at",
        "dispatched_at",
        "started_at",
        "finished_at",
    ]
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:  # noqa: ANN001
        return False  # jobs are submitted through the API, which validates them

    def get_urls(self) -> list:
        content = path(
            "<uuid:job_id>/artifacts/<uuid:artifact_id>/content/",
            self.admin_site.admin_view(self.artifact_content),
            name="jobs_job_artifact_content",
        )
        return [content, *super().get_urls()]

    def artifact_content(self, request: HttpRequest, job_id: str, artifact_id: str) -> FileResponse:
        """The stored file, for staff who may view jobs (the API's content URL needs a tenant's key)."""
        if not self.has_view_permission(request):
            raise Http404("no such artifact")
        artifact = Artifact.objects.filter(job_id=job_id, pk=artifact_id).first()
        if artifact is None:
            raise Http404("no such artifact")
        return FileResponse(artifact.file.open("rb"), content_type=artifact.content_type, filename=artifact.filename)

    def has_change_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return False  # state changes go through services (see the cancel action)

    @admin.display(description="params")
    def params_pretty(self, obj: Job) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.params, indent=2, ensure_ascii=False))

    @admin.display(description="result")
    def result_pretty(self, obj: Job) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.result, indent=2, ensure_ascii=False))

    @admin.action(description="Cancel selected jobs")
    def cancel_selected(self, request, queryset) -> None:  # noqa: ANN001
        for job in queryset:
            try:
                cancel_job(job)
            except ServiceError as exc:
                self.message_user(request, exc.message, messages.WARNING)


@admin.register(WorkerStatus)
class WorkerStatusAdmin(admin.ModelAdmin):
    """The hardware page: each worker's devices, cache budget and occupancy, and loaded models."""

    list_display = ["name", "queues", "device_summary", "cache_summary", "updated_at"]
    fields = ["name", "queues", "started_at", "updated_at", "devices_report", "cache_report"]
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:  # noqa: ANN001
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return False

    @admin.display(description="devices")
    def device_summary(self, obj: WorkerStatus) -> str:
        return ", ".join(d["id"] for d in obj.devices)

    @admin.display(description="cache (used / budget)")
    def cache_summary(self, obj: WorkerStatus) -> str:
        return "; ".join(
            f"{device}: {mib(u.get('used_bytes'))} / {mib(u.get('budget_bytes'))}"
            for device, u in (obj.cache.get("devices") or {}).items()
        )

    @admin.display(description="devices")
    def devices_report(self, obj: WorkerStatus) -> str:
        return format_html("<pre>{}</pre>", "\n".join(device_lines(obj.devices)))

    @admin.display(description="model cache")
    def cache_report(self, obj: WorkerStatus) -> str:
        return format_html("<pre>{}</pre>", "\n".join(cache_lines(obj.cache)))
