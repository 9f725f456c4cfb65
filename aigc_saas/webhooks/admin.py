"""Every webhook attempt, read-only, with a "redeliver" action (a new attempt for each selected job)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from aigc_saas.webhooks.models import WebhookDelivery
from aigc_saas.webhooks.services import redeliver


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "job", "attempt", "status", "response_code", "duration_ms", "url", "address"]
    list_filter = ["status"]
    search_fields = ["job__id", "url"]
    list_select_related = ["job"]
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
    actions = ["redeliver_selected"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: WebhookDelivery | None = None) -> bool:
        return False

    @admin.action(description="Redeliver the webhook of the selected deliveries' jobs")
    def redeliver_selected(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        jobs = {delivery.job_id: delivery.job for delivery in queryset.select_related("job")}
        sent = [row for row in (redeliver(job) for job in jobs.values()) if row is not None]
        self.message_user(request, f"Queued {len(sent)} new webhook attempt(s).", messages.SUCCESS)
