import json

from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html

from aigc_saas.errors import ServiceError
from aigc_saas.plugins.models import PluginProblemRecord, PluginRecord
from aigc_saas.plugins.services import reload_registry, sync_plugins, validate_record


class PluginRecordForm(forms.ModelForm):
    class Meta:
        model = PluginRecord
        fields = ["enabled", "model_id", "config", "default_params", "queue"]

    def clean(self):  # noqa: ANN201
        cleaned = super().clean()
        probe = PluginRecord(name=self.instance.name, **{k: cleaned.get(k) for k in self.Meta.fields})
        try:
            validate_record(probe)
        except ServiceError as exc:
            raise forms.ValidationError(exc.message) from None
        return cleaned


@admin.register(PluginRecord)
class PluginRecordAdmin(admin.ModelAdmin):
    form = PluginRecordForm
    list_display = ["name", "modality", "enabled", "installed", "model_id", "queue", "distribution", "version"]
    list_filter = ["modality", "enabled", "installed"]
    list_editable = ["enabled"]
    readonly_fields = [
        "name",
        "modality",
        "description",
        "distribution",
        "version",
        "entry_point",
        "installed",
        "synced_at",
        "params_schema_pretty",
        "config_schema_pretty",
    ]
    fieldsets = [
        (None, {"fields": ["name", "modality", "description", "enabled"]}),
        ("Deployment settings", {"fields": ["model_id", "config", "default_params", "queue"]}),
        ("Installed code", {"fields": ["distribution", "version", "entry_point", "installed", "synced_at"]}),
        ("Declared shape", {"fields": ["params_schema_pretty", "config_schema_pretty"]}),
    ]
    actions = ["sync_from_registry"]

    def has_add_permission(self, request) -> bool:  # noqa: ANN001
        return False  # records come from installed plugins

    @admin.display(description="Params JSON Schema")
    def params_schema_pretty(self, obj: PluginRecord) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.params_schema, indent=2))

    @admin.display(description="Config JSON Schema")
    def config_schema_pretty(self, obj: PluginRecord) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.config_schema, indent=2))

    @admin.action(description="Re-scan installed plugins")
    def sync_from_registry(self, request, queryset) -> None:  # noqa: ANN001
        reload_registry()
        records = sync_plugins()
        problems = PluginProblemRecord.objects.count()
        level = messages.WARNING if problems else messages.SUCCESS
        self.message_user(request, f"{len(records)} plugin(s) installed, {problems} skipped with problems.", level)


@admin.register(PluginProblemRecord)
class PluginProblemAdmin(admin.ModelAdmin):
    list_display = ["entry_point", "distribution", "code", "message", "seen_at"]
    list_filter = ["code"]
    readonly_fields = ["entry_point", "distribution", "code", "message", "seen_at"]

    def has_add_permission(self, request) -> bool:  # noqa: ANN001
        return False
