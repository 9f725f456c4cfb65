"""API keys: hashed at rest, shown once, revocable, last-used tracked; every call needs one."""

from __future__ import annotations

import hashlib

import pytest
from django.core.management import call_command

from aigc_saas.accounts.models import ApiKey
from aigc_saas.accounts.services import authenticate_key, create_api_key, revoke_api_key

pytestmark = pytest.mark.django_db


def test_only_the_hash_of_a_key_is_stored(tenant) -> None:  # noqa: ANN001
    key, raw = create_api_key(tenant, "ci")
    stored = ApiKey.objects.get(pk=key.pk)
    assert raw.startswith(f"aigc_{stored.prefix}_")
    assert stored.hashed_key == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in {str(v) for v in ApiKey.objects.filter(pk=key.pk).values().first().values()}


def test_a_key_with_the_right_prefix_but_wrong_secret_is_refused(tenant) -> None:  # noqa: ANN001
    _, raw = create_api_key(tenant, "ci")
    assert authenticate_key(raw[:-1] + ("A" if raw[-1] != "A" else "B")) is None
    assert authenticate_key(raw) is not None


def test_using_a_key_records_last_used(acme, tenant_key) -> None:  # noqa: ANN001
    assert acme.get("/api/v1/generators").status_code == 200
    tenant_key[0].refresh_from_db()
    assert tenant_key[0].last_used_at is not None


def test_a_revoked_key_answers_401(acme, tenant_key) -> None:  # noqa: ANN001
    revoke_api_key(tenant_key[0])
    response = acme.get("/api/v1/jobs")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_a_key_of_an_inactive_tenant_answers_401(acme, tenant) -> None:  # noqa: ANN001
    tenant.is_active = False
    tenant.save()
    assert acme.get("/api/v1/jobs").status_code == 401


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "not_authenticated"),
        ("Bearer aigc_00000000_nope", "invalid_api_key"),
        ("Bearer not-even-shaped-right", "invalid_api_key"),
        ("Basic dXNlcjpwYXNz", "invalid_authorization_header"),
    ],
)
def test_missing_or_bad_keys_answer_401_with_a_code(client, header, code) -> None:  # noqa: ANN001
    headers = {"Authorization": header} if header else {}
    response = client.get("/api/v1/jobs", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_operator_commands_create_a_tenant_and_key_then_revoke_it(capsys) -> None:  # noqa: ANN001
    call_command("create_tenant", "Corner Shop", "--slug", "corner", "--with-key", "ops")
    raw = capsys.readouterr().out.strip().splitlines()[-1].split(": ")[-1]
    key = authenticate_key(raw)
    assert key is not None and key.tenant.slug == "corner"

    call_command("create_api_key", "corner", "--name", "second")
    second = capsys.readouterr().out.strip().splitlines()[-1]
    assert authenticate_key(second).name == "second"

    call_command("revoke_api_key", key.prefix)
    assert authenticate_key(raw) is None
    assert authenticate_key(second) is not None
