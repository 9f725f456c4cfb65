import json

from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html

from aigc_saas.errors import ServiceError
from aigc_saas.plugins.models import PluginProblemRecord, PluginRecord
from aigc_saas.plugins.services import (
    registry,
    reload_registry,
    secrets_with,
    sync_plugins,
    validate_record,
)
from generators.registry import secret_config_fields

SECRET_PREFIX = "secret__"
CLEAR_PREFIX = "clear_secret__"
EDITABLE_FIELDS = ["enabled", "model_id", "config", "default_params", "queue"]


def secret_names(record: PluginRecord | None) -> list[str]:
    if record is None or record.name not in registry():
        return []
    return secret_config_fields(registry().get(record.name).cls.Config)


class PluginRecordForm(forms.ModelForm):
    """Deployment settings; secret config fields are write-only: blank keeps the stored value, nothing is shown."""

    class Meta:
        model = PluginRecord
        fields = EDITABLE_FIELDS

    def secret_changes(self) -> dict[str, str | None]:
        changes: dict[str, str | None] = {}
        for name in secret_names(self.instance):
            if self.cleaned_data.get(f"{CLEAR_PREFIX}{name}"):
                changes[name] = None
            elif value := self.cleaned_data.get(f"{SECRET_PREFIX}{name}"):
                changes[name] = value
        return changes

    def clean(self):  # noqa: ANN201
        cleaned = super().clean()
        probe = PluginRecord(name=self.instance.name, **{k: cleaned.get(k) for k in EDITABLE_FIELDS})
        try:
            probe.secrets = secrets_with(self.instance, self.secret_changes())
            validate_record(probe)
        except ServiceError as exc:
            raise forms.ValidationError(exc.message) from None
        self.instance.secrets = probe.secrets
        return cleaned


def secret_form_fields(record: PluginRecord | None) -> dict[str, forms.Field]:
    """A write-only password input and a clear box per secret field; the stored value never reaches the page."""
    fields: dict[str, forms.Field] = {}
    for name in secret_names(record):
        is_set = name in (record.secrets or {})
        fields[f"{SECRET_PREFIX}{name}"] = forms.CharField(
            label=name,
            required=False,
            strip=False,
            widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
            help_text=("Set. " if is_set else "Not set. ") + "Type a new value to replace it; blank keeps it.",
        )
        fields[f"{CLEAR_PREFIX}{name}"] = forms.BooleanField(label=f"clear {name}", required=False)
    return fields


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

    def get_fieldsets(self, request, obj=None):  # noqa: ANN001, ANN201
        secret_fields = list(secret_form_fields(obj))
        if not secret_fields:
            return self.fieldsets
        return [*self.fieldsets[:2], ("Secrets (write-only)", {"fields": secret_fields}), *self.fieldsets[2:]]

    def get_form(self, request, obj=None, change=False, **kwargs):  # noqa: ANN001, ANN201
        form = type("PluginRecordForm", (self.form,), secret_form_fields(obj))
        return super().get_form(request, obj, change, form=form, **kwargs)

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
