"""Settings helpers for running safely: the secret key, the production refusal, the proxy header.

Kept out of settings.py so they can be tested; settings.py calls them at import.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

# Keys that were ever a documented or shipped default, and so are public.
KNOWN_INSECURE_KEYS = {"insecure-embedded-default-change-me-in-production", "change-me", "changeme", "secret"}
MIN_KEY_LENGTH = 50  # what `check --deploy` (security.W009) asks for


def secret_key(data_dir: Path) -> str:
    """The embedded setup's key: generated once into `<data dir>/secret_key` (mode 600), then reused, so
    sessions survive restarts and every process of the stack (web, worker, beat) signs with the same key."""
    path = Path(data_dir) / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".secret_key.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(64))
        try:
            os.link(temporary, path)  # atomic, and refuses to replace: the first process to start wins
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    key = path.read_text().strip()
    if len(key) < MIN_KEY_LENGTH:
        raise ImproperlyConfigured(f"{path} holds a key shorter than {MIN_KEY_LENGTH} characters; delete it")
    return key


def refuse_insecure_secret_key(key: str, *, debug: bool) -> None:
    """Outside DEBUG, a public or weak key is a refusal to start, not a warning nobody reads."""
    if debug:
        return
    weak = (
        key in KNOWN_INSECURE_KEYS
        or key.startswith("django-insecure")
        or len(key) < MIN_KEY_LENGTH
        or len(set(key)) < 5
    )
    if weak:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is a known default or too weak (it needs at least "
            f"{MIN_KEY_LENGTH} random characters, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(64))'`); "
            "unset it to use the key generated in AIGC_DATA_DIR, or set DJANGO_DEBUG=true for development"
        )


def proxy_ssl_header(raw: str) -> tuple[str, str] | None:
    """`X-Forwarded-Proto` (value `https`) or `X-Forwarded-Proto=https` → Django's (META name, value)."""
    if not raw.strip():
        return None
    name, _, value = raw.partition("=")
    meta = name.strip().upper().replace("-", "_")
    if not meta.startswith("HTTP_"):
        meta = f"HTTP_{meta}"
    return meta, (value.strip() or "https")
