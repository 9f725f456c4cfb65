"""Failed authentication is throttled per client address: after the allowance, every key from there gets 429."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from aigc_saas.accounts.models import ApiKey
from aigc_saas.accounts.services import create_api_key

pytestmark = pytest.mark.django_db


def guess(client, secret: str, address: str = "127.0.0.1"):  # noqa: ANN001, ANN201
    return client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {secret}"}, REMOTE_ADDR=address)


def test_wrong_keys_answer_401_until_the_allowance_then_429(client, tenant_key) -> None:  # noqa: ANN001
    prefix = tenant_key[0].prefix
    allowance = settings.AIGC_AUTH_FAILURES_PER_MINUTE
    assert allowance == 20

    codes = [guess(client, f"aigc_{prefix}_wrong{i}").status_code for i in range(allowance + 5)]

    assert codes[:allowance] == [401] * allowance
    assert codes[allowance:] == [429] * 5
    refused = guess(client, f"aigc_{prefix}_wrong-again")
    assert refused.json()["error"]["code"] == "rate_limited"
    assert "wrong API keys from this address" in refused.json()["error"]["message"]
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["X-RateLimit-Limit"] == str(allowance)


def test_while_locked_out_even_the_right_key_answers_429(client, tenant_key) -> None:  # noqa: ANN001
    for i in range(settings.AIGC_AUTH_FAILURES_PER_MINUTE):
        guess(client, f"aigc_00000000_nope{i}")

    # Otherwise the 200 of a lucky guess would stand out among the 429s.
    assert guess(client, tenant_key[1]).status_code == 429


def test_other_addresses_and_good_keys_are_not_affected(client, tenant_key) -> None:  # noqa: ANN001
    for i in range(settings.AIGC_AUTH_FAILURES_PER_MINUTE):
        guess(client, f"aigc_00000000_nope{i}", address="10.9.8.7")

    assert guess(client, "aigc_00000000_nope", address="10.9.8.7").status_code == 429
    assert guess(client, tenant_key[1], address="10.9.8.6").status_code == 200
    assert [guess(client, tenant_key[1]).status_code for _ in range(30)] == [200] * 30


def test_malformed_authorization_headers_count_as_failures(client) -> None:  # noqa: ANN001
    headers = {"Authorization": "Basic dXNlcjpwYXNz"}
    codes = [
        client.get("/api/v1/jobs", headers=headers).status_code
        for _ in range(settings.AIGC_AUTH_FAILURES_PER_MINUTE + 1)
    ]
    assert codes[-1] == 429 and codes.count(401) == settings.AIGC_AUTH_FAILURES_PER_MINUTE


def test_requests_without_any_key_do_not_spend_the_allowance(client, tenant_key) -> None:  # noqa: ANN001
    assert all(client.get("/api/v1/jobs").status_code == 401 for _ in range(30))
    assert guess(client, tenant_key[1]).status_code == 200


def test_while_locked_out_an_expired_key_answers_429_not_that_it_expired(client, tenant) -> None:  # noqa: ANN001
    key, raw = create_api_key(tenant, "old", expires_at=timezone.now() + timedelta(hours=1))
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert guess(client, raw).json()["error"]["code"] == "api_key_expired"
    for i in range(settings.AIGC_AUTH_FAILURES_PER_MINUTE):
        guess(client, f"aigc_00000000_nope{i}")

    # "Expired" would tell a guesser that this secret is a real key's.
    assert guess(client, raw).status_code == 429
