from django.contrib import admin

from aigc_saas.audit.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the log is written by signals, never by hand."""

    list_display = ["created_at", "actor", "action", "target_type", "target_id", "target_repr", "tenant"]
    list_filter = ["action", "target_type", "tenant"]
    search_fields = ["actor", "action", "target_id", "target_repr"]
    date_hierarchy = "created_at"
    list_select_related = ["tenant"]
    fields = [
        "created_at",
        "actor",
        "user",
        "action",
        "target_type",
        "target_id",
        "target_repr",
        "tenant",
        "changes",
    ]
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:  # noqa: ANN001
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return False
