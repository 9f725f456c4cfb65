"""Refuse to run with a public key outside DEBUG; HTTPS settings from the environment; admin login throttled."""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from aigc_saas.deploy import proxy_ssl_header, refuse_insecure_secret_key, secret_key

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "DJANGO_DEBUG": "false",
    "DJANGO_ALLOWED_HOSTS": "api.example.com",
    "DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
    "DJANGO_SECURE_SSL_REDIRECT": "true",
    "DJANGO_SECURE_COOKIES": "true",
    "DJANGO_SECURE_HSTS_SECONDS": "31536000",
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "DJANGO_SECURE_HSTS_PRELOAD": "true",
}


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "AIGC_"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "aigc_saas.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_embedded_key_is_generated_once_with_mode_600(tmp_path: Path) -> None:
    keys: list[str] = []
    threads = [threading.Thread(target=lambda: keys.append(secret_key(tmp_path))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(set(keys)) == 1 and len(keys[0]) >= 50
    assert stat.S_IMODE((tmp_path / "secret_key").stat().st_mode) == 0o600
    assert secret_key(tmp_path) == keys[0]
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key"]  # no temporary files left behind


@pytest.mark.parametrize(
    "key", ["insecure-embedded-default-change-me-in-production", "change-me", "django-insecure-" + "x" * 60, "a" * 80]
)
def test_public_or_weak_keys_refuse_to_start_outside_debug(key: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="DJANGO_SECRET_KEY"):
        refuse_insecure_secret_key(key, debug=False)
    refuse_insecure_secret_key(key, debug=True)
    refuse_insecure_secret_key(secrets.token_urlsafe(64), debug=False)


def test_a_process_with_the_old_default_key_does_not_start(tmp_path: Path) -> None:
    refused = manage(
        "check",
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY="insecure-embedded-default-change-me-in-production",
        AIGC_DATA_DIR=str(tmp_path),
    )
    assert refused.returncode != 0
    assert "ImproperlyConfigured" in refused.stderr and "DJANGO_SECRET_KEY" in refused.stderr

    started = manage("check", DJANGO_DEBUG="false", AIGC_DATA_DIR=str(tmp_path))  # unset: the generated key
    assert started.returncode == 0, started.stderr
    assert (tmp_path / "secret_key").exists()


def test_check_deploy_is_clean_with_the_production_settings(tmp_path: Path) -> None:
    env = {**PRODUCTION, "DJANGO_SECRET_KEY": secrets.token_urlsafe(64), "AIGC_DATA_DIR": str(tmp_path)}
    clean = manage("check", "--deploy", "--tag", "security", "--fail-level", "WARNING", **env)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "no issues" in clean.stdout

    embedded = manage("check", "--deploy", "--tag", "security", "--fail-level", "WARNING", AIGC_DATA_DIR=str(tmp_path))
    assert embedded.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in embedded.stderr


def test_the_environment_sets_the_https_settings(tmp_path: Path) -> None:
    env = {**PRODUCTION, "DJANGO_SECRET_KEY": secrets.token_urlsafe(64), "AIGC_DATA_DIR": str(tmp_path)}
    names = "SECURE_PROXY_SSL_HEADER SESSION_COOKIE_SECURE CSRF_COOKIE_SECURE SECURE_HSTS_SECONDS SECURE_SSL_REDIRECT"
    code = f"from django.conf import settings; print([getattr(settings, n) for n in {names.split()!r}])"
    shown = manage("shell", "-c", code, **env)
    assert (
        shown.stdout.strip().splitlines()[-1] == "[('HTTP_X_FORWARDED_PROTO', 'https'), True, True, 31536000, True]"
    ), shown.stderr


def test_proxy_header_forms() -> None:
    assert proxy_ssl_header("") is None
    assert proxy_ssl_header("X-Forwarded-Proto") == ("HTTP_X_FORWARDED_PROTO", "https")
    assert proxy_ssl_header("X-Forwarded-Ssl=on") == ("HTTP_X_FORWARDED_SSL", "on")


@pytest.mark.django_db
def test_hsts_is_sent_on_requests_that_came_over_https_through_the_proxy(settings) -> None:  # noqa: ANN001
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    response = Client().get("/admin/login/", HTTP_X_FORWARDED_PROTO="https")
    assert response.headers["Strict-Transport-Security"] == "max-age=3600"
    assert "Strict-Transport-Security" not in Client().get("/admin/login/").headers


@pytest.mark.django_db
def test_admin_login_is_locked_after_repeated_failures(settings) -> None:  # noqa: ANN001
    settings.AIGC_ADMIN_LOGIN_MAX_FAILURES = 3
    username = f"admin-{secrets.token_hex(4)}"
    User.objects.create_superuser(username, "a@example.com", "right-password-123")
    address = f"203.0.113.{secrets.randbelow(200) + 1}"
    client = Client(REMOTE_ADDR=address)

    for _ in range(3):
        wrong = client.post("/admin/login/", {"username": username, "password": "wrong"})
        assert wrong.status_code == 200 and "Too many" not in wrong.content.decode()
    locked = client.post("/admin/login/", {"username": username, "password": "right-password-123"})
    assert "Too many failed logins" in locked.content.decode()
    assert "_auth_user_id" not in client.session

    # Another address is locked out for this username too; this address for any other username.
    other = Client(REMOTE_ADDR="198.51.100.7").post("/admin/login/", {"username": username, "password": "x"})
    assert "Too many failed logins" in other.content.decode()


@pytest.mark.django_db
def test_admin_login_still_works_below_the_limit(settings) -> None:  # noqa: ANN001
    username = f"admin-{secrets.token_hex(4)}"
    User.objects.create_superuser(username, "a@example.com", "right-password-123")
    client = Client(REMOTE_ADDR="192.0.2.200")
    client.post("/admin/login/", {"username": username, "password": "wrong"})
    ok = client.post("/admin/login/", {"username": username, "password": "right-password-123"})
    assert ok.status_code == 302 and client.session.get("_auth_user_id")
