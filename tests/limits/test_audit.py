"""The audit log: key, tenant-quota, plugin and template changes and admin actions on jobs, with who did them."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from aigc_saas.accounts.models import ApiKey
from aigc_saas.accounts.services import create_api_key, revoke_api_key
from aigc_saas.audit.models import AuditEvent
from aigc_saas.jobs import services
from aigc_saas.plugins.models import PluginRecord

pytestmark = pytest.mark.django_db

TEMPLATE = {
    "scenario": "marketing",
    "slug": "audited",
    "title": "Audited",
    "generator": "transformers-text",
    "prompts": {"prompt": "Greet {{ name }}."},
    "variables": [{"name": "name", "type": "string", "max_length": 40, "description": "Who."}],
    "sample_variables": {"name": "Ada"},
}


def events(action: str | None = None, **filters: object) -> list[AuditEvent]:
    found = AuditEvent.objects.filter(**filters).order_by("id")
    return list(found.filter(action=action) if action else found)


def test_key_creation_from_the_command_and_revocation_are_recorded(tenant) -> None:  # noqa: ANN001
    call_command("create_api_key", "acme", "--name", "ops", "--scope", "read")
    key = ApiKey.objects.get(name="ops")
    [created] = events("api_key.created", target_id=str(key.pk))
    assert created.actor == "cli:create_api_key"
    assert created.tenant_id == tenant.pk
    assert created.changes["scopes"] == [None, ["read"]]

    revoke_api_key(key)

    [revoked] = events("api_key.revoked", target_id=str(key.pk))
    assert revoked.actor == "system"
    assert revoked.changes["revoked_at"][0] is None and revoked.changes["revoked_at"][1]


def test_admin_revoke_action_and_expiry_edit_are_recorded_with_the_admin_user(admin_client, admin_user, tenant) -> None:  # noqa: ANN001
    key, _ = create_api_key(tenant, "ci")

    admin_client.post("/admin/accounts/apikey/", {"action": "revoke", "_selected_action": [key.pk]})

    [revoked] = events("api_key.revoked", target_id=str(key.pk))
    assert revoked.actor == f"user:{admin_user.username}" and revoked.user_id == admin_user.pk
    [action] = events("admin_action.revoke")
    assert action.target_type == "accounts.apikey" and action.changes["selected"] == [str(key.pk)]

    later = (timezone.now() + timedelta(days=3)).replace(microsecond=0)
    admin_client.post(
        f"/admin/accounts/apikey/{key.pk}/change/",
        {
            "name": "ci",
            "scopes": ["read", "submit", "templates"],
            "expires_at_0": later.strftime("%Y-%m-%d"),
            "expires_at_1": later.strftime("%H:%M:%S"),
        },
    )
    [expiry] = events("api_key.expiry_changed", target_id=str(key.pk))
    assert expiry.changes["expires_at"] == [None, later.isoformat()]
    assert expiry.actor == f"user:{admin_user.username}"
    assert events("admin.changed", target_id=str(key.pk))  # Django's own admin log entry, mirrored


def test_quota_changes_in_the_admin_are_recorded(admin_client, tenant) -> None:  # noqa: ANN001
    admin_client.post(
        f"/admin/accounts/tenant/{tenant.pk}/change/",
        {
            "slug": tenant.slug,
            "name": tenant.name,
            "is_active": "on",
            "max_jobs_per_day": "5",
            "max_active_jobs": "50",
            "submissions_per_minute": "30",
            "membership_set-TOTAL_FORMS": "0",
            "membership_set-INITIAL_FORMS": "0",
        },
    )
    [change] = events("tenant.quota_changed", target_id=str(tenant.pk))
    assert change.changes == {"max_jobs_per_day": [1000, 5], "submissions_per_minute": [None, 30]}
    assert change.tenant_id == tenant.pk


def test_plugin_disable_and_config_changes_in_the_admin_are_recorded(admin_client, admin_user) -> None:  # noqa: ANN001
    record = PluginRecord.objects.get(name="transformers-text")
    form = {"model_id": "", "config": "{}", "default_params": "{}", "queue": ""}
    admin_client.post(f"/admin/plugins/pluginrecord/{record.pk}/change/", form)  # `enabled` unticked
    admin_client.post(
        f"/admin/plugins/pluginrecord/{record.pk}/change/",
        form | {"enabled": "on", "default_params": '{"max_new_tokens": 64}'},
    )

    [disabled] = events("plugin.disabled", target_id=str(record.pk))
    assert disabled.changes == {"enabled": [True, False]}
    assert disabled.actor == f"user:{admin_user.username}"
    [changed] = events("plugin.changed", target_id=str(record.pk))
    assert changed.changes == {"enabled": [False, True], "default_params": [{}, {"max_new_tokens": 64}]}


def test_plugin_secret_changes_are_recorded_without_the_secret() -> None:
    record = PluginRecord.objects.get(name="transformers-text")
    record.secrets = {"token": "hf_supersecret"}
    record.save()
    [changed] = events("plugin.changed", target_id=str(record.pk))
    assert changed.changes == {"secrets": "changed"}
    assert "hf_supersecret" not in json.dumps([e.changes for e in AuditEvent.objects.all()])


def test_a_plugin_sync_that_changes_no_setting_records_nothing() -> None:
    from aigc_saas.plugins.services import sync_plugins

    before = AuditEvent.objects.count()
    sync_plugins()
    assert AuditEvent.objects.filter(action__startswith="plugin.").count() - before <= 0


def test_template_create_update_delete_through_the_api_and_admin_are_recorded(
    acme, tenant_key, admin_client, tenant
) -> None:  # noqa: ANN001
    created = acme.post("/api/v1/templates", json.dumps(TEMPLATE), content_type="application/json")
    assert created.status_code == 201, created.content
    template_id = created.json()["id"]
    edited = acme.patch(
        f"/api/v1/templates/{template_id}",
        json.dumps({"prompts": {"prompt": "Hello {{ name }}!"}}),
        content_type="application/json",
    )
    assert edited.status_code == 200, edited.content
    response = admin_client.post(f"/admin/scenarios_core/template/{template_id}/delete/", {"post": "yes"})
    assert response.status_code == 302, response.content[:500]

    recorded = [(e.action, e.actor) for e in events(target_id=template_id) if e.action.startswith("template.")]
    key = f"api_key:aigc_{tenant_key[0].prefix}"
    assert recorded[0] == ("template.created", key)
    assert ("template.changed", key) in recorded
    assert recorded[-1][0] == "template.deleted" and recorded[-1][1].startswith("user:")
    assert all(e.tenant_id == tenant.pk for e in events(target_id=template_id))


def test_cancelling_jobs_from_the_admin_is_recorded(admin_client, admin_user, tenant) -> None:  # noqa: ANN001
    tenant.max_jobs_per_day = tenant.max_active_jobs = None
    tenant.save()
    jobs = [services.submit_job(tenant, "transformers-text", {"prompt": "x"}) for _ in range(2)]

    admin_client.post("/admin/jobs/job/", {"action": "cancel_selected", "_selected_action": [str(j.pk) for j in jobs]})

    [event] = events("admin_action.cancel_selected")
    assert event.actor == f"user:{admin_user.username}"
    assert event.target_type == "jobs.job"
    assert sorted(event.changes["selected"]) == sorted(str(j.pk) for j in jobs)
    assert event.tenant_id == tenant.pk
    assert all(j.state == "cancelled" for j in [type(jobs[0]).objects.get(pk=j.pk) for j in jobs])


def test_the_audit_log_is_read_only_in_the_admin(admin_client, tenant) -> None:  # noqa: ANN001
    create_api_key(tenant, "x")
    event = AuditEvent.objects.first()
    assert admin_client.get("/admin/audit/auditevent/").status_code == 200
    assert admin_client.get(f"/admin/audit/auditevent/{event.pk}/change/").status_code == 200
    assert admin_client.get("/admin/audit/auditevent/add/").status_code == 403
    assert admin_client.post(f"/admin/audit/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk).exists()
