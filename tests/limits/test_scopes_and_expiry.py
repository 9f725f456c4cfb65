"""API key scopes (read, submit, templates) enforced per endpoint, and key expiry."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.utils import timezone

from aigc_saas.accounts.models import ApiKey
from aigc_saas.accounts.services import authenticate_key, create_api_key

pytestmark = pytest.mark.django_db

TEMPLATE = {
    "scenario": "marketing",
    "slug": "scoped",
    "title": "Scoped",
    "generator": "transformers-text",
    "prompts": {"prompt": "Say hi to {{ name }}."},
    "variables": [{"name": "name", "type": "string", "max_length": 40, "description": "Who."}],
    "sample_variables": {"name": "Ada"},
}


def post(client, path: str, body: object):  # noqa: ANN001, ANN201
    return client.post(path, json.dumps(body), content_type="application/json")


def test_new_keys_get_every_scope_as_before(tenant) -> None:  # noqa: ANN001
    key, _ = create_api_key(tenant, "ci")
    assert key.scopes == ["read", "submit", "templates"]
    assert ApiKey.objects.get(pk=key.pk).expires_at is None


def test_a_read_only_key_reads_but_cannot_submit_or_cancel(client_for, tenant, submit) -> None:  # noqa: ANN001
    _, raw = create_api_key(tenant, "dashboard", scopes=["read"])
    reader = client_for(raw)

    assert reader.get("/api/v1/jobs").status_code == 200
    assert reader.get("/api/v1/generators").status_code == 200
    refused = submit(reader)
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "insufficient_scope"
    assert "`submit`" in error["message"]
    assert reader.post("/api/v1/jobs/00000000-0000-0000-0000-000000000000/cancel").status_code == 403


def test_a_submit_only_key_cannot_read(client_for, tenant, submit) -> None:  # noqa: ANN001
    _, raw = create_api_key(tenant, "ingest", scopes=["submit"])
    writer = client_for(raw)
    assert submit(writer).status_code == 202
    refused = writer.get("/api/v1/jobs")
    assert refused.status_code == 403
    assert "`read`" in refused.json()["error"]["message"]


def test_managing_templates_needs_the_templates_scope(client_for, tenant) -> None:  # noqa: ANN001
    _, without = create_api_key(tenant, "no-templates", scopes=["read", "submit"])
    _, full = create_api_key(tenant, "full")

    refused = post(client_for(without), "/api/v1/templates", TEMPLATE)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_scope"
    assert "`templates`" in refused.json()["error"]["message"]

    created = post(client_for(full), "/api/v1/templates", TEMPLATE)
    assert created.status_code == 201, created.content
    url = f"/api/v1/templates/{created.json()['id']}"
    assert client_for(without).get(url).status_code == 200
    edit = client_for(without).patch(url, json.dumps({"title": "New"}), content_type="application/json")
    assert edit.status_code == 403
    run = post(client_for(without), f"{url}/runs", {"variables": {"name": "Ada"}})
    assert run.status_code == 202, run.content


def test_unknown_scopes_are_refused(tenant) -> None:  # noqa: ANN001
    with pytest.raises(ValidationError, match="'admin' is not one of"):
        create_api_key(tenant, "bad", scopes=["read", "admin"])


def test_an_expired_key_answers_401_api_key_expired(client_for, tenant) -> None:  # noqa: ANN001
    key, raw = create_api_key(tenant, "short", expires_at=timezone.now() + timedelta(hours=1))
    assert client_for(raw).get("/api/v1/jobs").status_code == 200

    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = client_for(raw).get("/api/v1/jobs")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "api_key_expired"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert authenticate_key(raw) is None


def test_an_expiry_in_the_past_is_refused_at_creation(tenant) -> None:  # noqa: ANN001
    with pytest.raises(ValidationError, match="not in the future"):
        create_api_key(tenant, "late", expires_at=timezone.now() - timedelta(days=1))


def test_the_command_issues_scoped_expiring_keys(tenant, capsys) -> None:  # noqa: ANN001
    call_command("create_api_key", "acme", "--name", "ro", "--scope", "read", "--expires-in-days", "30")
    out = capsys.readouterr().out.strip().splitlines()
    key = authenticate_key(out[-1])
    assert key.scopes == ["read"]
    assert timedelta(days=29, hours=23) < key.expires_at - timezone.now() <= timedelta(days=30)

    call_command("create_api_key", "acme", "--scope", "read,submit")
    assert authenticate_key(capsys.readouterr().out.strip().splitlines()[-1]).scopes == ["read", "submit"]

    with pytest.raises(CommandError, match="'write' is not one of"):
        call_command("create_api_key", "acme", "--scope", "write")
    with pytest.raises(CommandError, match="--expires-in-days"):
        call_command("create_api_key", "acme", "--expires-in-days", "0")


def test_an_admin_edits_a_keys_scopes_and_expiry(admin_client, tenant_key) -> None:  # noqa: ANN001
    key = tenant_key[0]
    url = f"/admin/accounts/apikey/{key.pk}/change/"
    assert admin_client.get(url).status_code == 200
    later = (timezone.now() + timedelta(days=7)).replace(microsecond=0)

    response = admin_client.post(
        url,
        {
            "name": key.name,
            "scopes": ["read"],
            "expires_at_0": later.strftime("%Y-%m-%d"),
            "expires_at_1": later.strftime("%H:%M:%S"),
        },
    )

    assert response.status_code == 302, response.content[:2000]
    key.refresh_from_db()
    assert key.scopes == ["read"]
    assert key.expires_at == later
