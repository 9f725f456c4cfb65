from django.contrib import admin

from aigc_saas.assets.models import Asset


@admin.register(Asset)
class AssetAdmin(admin.ModelAdmin):
    list_display = ("id", "tenant", "kind", "content_type", "size", "created_at", "last_used_at")
    list_filter = ("kind", "content_type")
    search_fields = ("id", "sha256", "filename")
    readonly_fields = [f.name for f in Asset._meta.fields]

    def has_add_permission(self, request) -> bool:  # noqa: ANN001 - assets come from the upload API only
        return False
