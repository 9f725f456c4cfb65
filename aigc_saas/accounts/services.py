"""Tenant and API-key actions: create, authenticate, revoke."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from aigc_saas import rows
from aigc_saas.accounts.models import SCOPES, ApiKey, Tenant, check_scopes

KEY_PREFIX = "aigc"
# last_used_at is written at most this often per key, so authentication is not a write per request.
LAST_USED_RESOLUTION = timedelta(seconds=60)


class TenantExists(Exception):
    pass


def hash_key(raw_key: str) -> str:
    # Keys carry 192 random bits, so a fast hash is safe here (no dictionary to attack).
    return hashlib.sha256(raw_key.encode()).hexdigest()


def create_tenant(name: str, slug: str | None = None) -> Tenant:
    slug = slug or slugify(name)
    if not slug:
        raise ValueError(f"`slug`: cannot derive a slug from the name {name!r}; give one")
    if Tenant.objects.filter(slug=slug).exists():
        raise TenantExists(f"`slug`: a tenant with slug {slug!r} already exists")
    return Tenant.objects.create(name=name, slug=slug, webhook_secret=secrets.token_hex(32))


@transaction.atomic
def create_api_key(
    tenant: Tenant, name: str, *, scopes: list[str] | None = None, expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """Create a key (all scopes unless given); the raw key is returned once and never stored."""
    chosen = check_scopes(list(SCOPES) if scopes is None else scopes)
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": f"`expires_at`: {expires_at.isoformat()} is not in the future"})
    prefix = secrets.token_hex(4)
    raw = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(24)}"
    key = ApiKey.objects.create(
        tenant=tenant,
        name=name,
        prefix=prefix,
        hashed_key=hash_key(raw),
        scopes=chosen,
        expires_at=expires_at,
    )
    return key, raw


def find_key(raw_key: str) -> ApiKey | None:
    """The key whose secret is `raw_key`, whatever its state (revoked, expired), or None."""
    parts = raw_key.split("_")
    if len(parts) < 3 or parts[0] != KEY_PREFIX:
        return None
    key = rows.one(ApiKey, prefix=parts[1])
    if key is None or not hmac.compare_digest(key.hashed_key, hash_key(raw_key)):
        return None
    tenant = rows.one(Tenant, id=key.tenant_id)
    if tenant is None:  # deleted since the key was read (its keys go with it)
        return None
    key.tenant = tenant
    return key


def touch_last_used(key: ApiKey) -> None:
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now


def authenticate_key(raw_key: str) -> ApiKey | None:
    """The usable key matching `raw_key` (not revoked, not expired, tenant active), or None; touches last_used_at."""
    key = find_key(raw_key)
    if key is None or key.revoked_at is not None or key.is_expired or not key.tenant.is_active:
        return None
    touch_last_used(key)
    return key


def revoke_api_key(key: ApiKey) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key


KEY_ACTIVE_CACHE_SECONDS = 2.0
_key_active_cache: dict[object, tuple[float, bool]] = {}


def key_is_active(key_id: object) -> bool:
    """Whether the key may still be used (not revoked, not expired, tenant active). Long-lived streams ask this
    between events, so it is cached per process for at most KEY_ACTIVE_CACHE_SECONDS: a revocation ends them
    within that time, and a busy stream costs one small query every 2 s, not one per event."""
    now = time.monotonic()
    cached = _key_active_cache.get(key_id)
    if cached is not None and cached[0] > now:
        return cached[1]
    key = ApiKey.objects.select_related("tenant").filter(pk=key_id).first()
    active = key is not None and key.is_active and key.tenant.is_active
    if len(_key_active_cache) > 10_000:  # ids of keys long gone: start over rather than grow
        _key_active_cache.clear()
    _key_active_cache[key_id] = (now + KEY_ACTIVE_CACHE_SECONDS, active)
    return active
