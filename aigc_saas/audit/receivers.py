"""Signal receivers that turn saves and deletes of the watched models into AuditEvent rows.

Other apps are watched by model label (`sender="app.Model"`), so this app imports none of them and a
missing optional app (the scenario apps) is simply not watched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from django.apps import apps
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.db import models
from django.db.models.signals import post_delete, post_save, pre_save
from django.http import HttpRequest

from aigc_saas.audit.context import current
from aigc_saas.audit.models import AuditEvent

REDACTED = "changed"


@dataclass(frozen=True)
class Watch:
    """What to record for one model: the fields whose changes matter, and how to name the event."""

    label: str
    kind: str  # the action prefix: `api_key`, `tenant`, …
    fields: tuple[str, ...]
    secret_fields: tuple[str, ...] = ()
    record_create: bool = True
    record_delete: bool = True


WATCHED = [
    Watch("accounts.ApiKey", "api_key", ("name", "revoked_at", "expires_at", "scopes")),
    Watch(
        "accounts.Tenant",
        "tenant",
        (
            "name",
            "is_active",
            "max_jobs_per_day",
            "max_active_jobs",
            "requests_per_second",
            "request_burst",
            "submissions_per_minute",
        ),
        secret_fields=("webhook_secret",),
    ),
    Watch(
        "plugins.PluginRecord",
        "plugin",
        ("enabled", "model_id", "config", "default_params", "queue"),
        secret_fields=("secrets",),
    ),
    Watch("scenarios_core.Template", "template", ("slug", "scenario", "is_active", "latest_version")),
]
QUOTA_FIELDS = {"max_jobs_per_day", "max_active_jobs", "requests_per_second", "request_burst", "submissions_per_minute"}
_BY_LABEL = {w.label: w for w in WATCHED}


def _watch_for(instance: models.Model) -> Watch | None:
    return _BY_LABEL.get(instance._meta.label)


def _tenant_id(instance: models.Model) -> Any:
    if instance._meta.label == "accounts.Tenant":
        return instance.pk
    return getattr(instance, "tenant_id", None)


def _json(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool | list | dict):
        return value
    if isinstance(value, date):  # datetimes too
        return value.isoformat()
    return str(value)


def record(action: str, instance: models.Model, changes: dict[str, Any] | None = None, **extra: Any) -> AuditEvent:
    """Write one event for `instance` as the current actor."""
    actor = current()
    return AuditEvent.objects.create(
        actor=actor.describe(),
        user_id=actor.user_id(),
        action=action,
        target_type=instance._meta.label_lower,
        target_id=str(instance.pk or ""),
        target_repr=str(instance)[:200],
        tenant_id=extra.pop("tenant_id", _tenant_id(instance)),
        changes=changes or {},
    )


VERSIONED_FIELDS = (
    "title",
    "description",
    "generator",
    "prompts",
    "variables",
    "default_params",
    "allowed_overrides",
    "output_schema",
)


def _on_template_version(sender: type[models.Model], instance: Any, created: bool, **kwargs: Any) -> None:
    """An edit of a template is a new version (the template row itself is updated in bulk, without signals)."""
    if not created or kwargs.get("raw") or instance.version <= 1:
        return
    previous = sender._default_manager.filter(template_id=instance.template_id, version=instance.version - 1)
    old = previous.values(*VERSIONED_FIELDS).first() or {}
    changes: dict[str, Any] = {"version": [instance.version - 1, instance.version]}
    changes |= {f: [old.get(f), getattr(instance, f)] for f in VERSIONED_FIELDS if old.get(f) != getattr(instance, f)}
    record("template.changed", instance.template, changes)


def _remember_old_values(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    watch = _watch_for(instance)
    if watch is None or instance._state.adding or instance.pk is None:
        return
    names = [*watch.fields, *watch.secret_fields]
    instance._audit_old = sender._default_manager.filter(pk=instance.pk).values(*names).first()


def _on_save(sender: type[models.Model], instance: models.Model, created: bool, **kwargs: Any) -> None:
    watch = _watch_for(instance)
    if watch is None or kwargs.get("raw"):
        return
    if created:
        if watch.record_create:
            record(f"{watch.kind}.created", instance, {f: [None, _json(getattr(instance, f))] for f in watch.fields})
        return
    old = getattr(instance, "_audit_old", None)
    instance._audit_old = None
    if old is None:
        return
    changes = {f: [_json(old[f]), _json(getattr(instance, f))] for f in watch.fields if old[f] != getattr(instance, f)}
    changes |= {f: REDACTED for f in watch.secret_fields if old[f] != getattr(instance, f)}
    if changes:
        record(_change_action(watch, changes), instance, changes)


def _change_action(watch: Watch, changes: dict[str, Any]) -> str:
    """A specific name for the changes people search for; `<kind>.changed` for the rest."""
    if watch.kind == "api_key" and "revoked_at" in changes:
        return "api_key.revoked" if changes["revoked_at"][1] else "api_key.unrevoked"
    if watch.kind == "api_key" and set(changes) == {"expires_at"}:
        return "api_key.expiry_changed"
    if watch.kind == "tenant" and set(changes) <= QUOTA_FIELDS:
        return "tenant.quota_changed"
    if watch.kind == "plugin" and set(changes) == {"enabled"}:
        return "plugin.enabled" if changes["enabled"][1] else "plugin.disabled"
    return f"{watch.kind}.changed"


def _on_delete(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    watch = _watch_for(instance)
    if watch is None or not watch.record_delete:
        return
    changes = {f: [_json(getattr(instance, f)), None] for f in watch.fields}
    # A deleted tenant's own event cannot point at its row any more; its slug stays in target_repr.
    extra = {"tenant_id": None} if watch.kind == "tenant" else {}
    record(f"{watch.kind}.deleted", instance, changes, **extra)


ADMIN_FLAGS = {ADDITION: "added", CHANGE: "changed", DELETION: "deleted"}


def _on_admin_log(sender: type[LogEntry], instance: LogEntry, created: bool, **kwargs: Any) -> None:
    """Admin add/change/delete through its forms: who, what, and Django's own change message."""
    if not created or kwargs.get("raw"):
        return
    model = instance.content_type.model_class() if instance.content_type_id else None
    AuditEvent.objects.create(
        actor=f"user:{instance.user.get_username()}",
        user_id=instance.user_id,
        action=f"admin.{ADMIN_FLAGS.get(instance.action_flag, 'logged')}",
        target_type=model._meta.label_lower if model else "",
        target_id=str(instance.object_id or "")[:64],
        target_repr=instance.object_repr[:200],
        tenant_id=_admin_target_tenant(model, instance.object_id),
        changes={"message": instance.get_change_message()},
    )


def _admin_target_tenant(model: type[models.Model] | None, object_id: str | None) -> Any:
    if model is None or not object_id:
        return None
    if model._meta.label == "accounts.Tenant":
        return object_id
    if any(f.name == "tenant" for f in model._meta.get_fields()):
        try:
            return model._default_manager.filter(pk=object_id).values_list("tenant_id", flat=True).first()
        except (ValueError, TypeError):  # an id that is not this model's pk type
            return None
    return None


def record_admin_action(request: HttpRequest) -> None:
    """A changelist action (cancel jobs, revoke keys, sync plugins…): the action name and the selected ids."""
    model_admin = getattr(request.resolver_match.func, "model_admin", None)  # set by ModelAdmin.get_urls
    if model_admin is None:
        return
    model = model_admin.model
    selected = request.POST.getlist("_selected_action")[:500]
    tenant_ids = set()
    if any(f.name == "tenant" for f in model._meta.get_fields()):
        try:
            tenant_ids = set(model._default_manager.filter(pk__in=selected).values_list("tenant_id", flat=True))
        except (ValueError, TypeError):
            tenant_ids = set()
    actor = current()
    AuditEvent.objects.create(
        actor=actor.describe(),
        user_id=actor.user_id(),
        action=f"admin_action.{request.POST['action'][:40]}",
        target_type=model._meta.label_lower,
        target_id=selected[0] if len(selected) == 1 else "",
        target_repr=f"{len(selected)} selected",
        tenant_id=next(iter(tenant_ids)) if len(tenant_ids) == 1 else None,
        changes={"selected": selected, "select_across": request.POST.get("select_across") == "1"},
    )


def connect() -> None:
    for watch in WATCHED:
        app_label = watch.label.split(".")[0]
        if app_label not in apps.app_configs:
            continue
        uid = f"audit:{watch.label}"
        pre_save.connect(_remember_old_values, sender=watch.label, dispatch_uid=f"{uid}:pre")
        post_save.connect(_on_save, sender=watch.label, dispatch_uid=f"{uid}:post")
        post_delete.connect(_on_delete, sender=watch.label, dispatch_uid=f"{uid}:delete")
    if "scenarios_core" in apps.app_configs:
        post_save.connect(_on_template_version, sender="scenarios_core.TemplateVersion", dispatch_uid="audit:tv")
    post_save.connect(_on_admin_log, sender=LogEntry, dispatch_uid="audit:logentry")
