"""`Authorization: Bearer <key>` for every API call, with failed attempts throttled per client address."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.throttling import BaseThrottle

from aigc_saas.accounts import ratelimit
from aigc_saas.accounts.models import ApiKey, Tenant
from aigc_saas.accounts.ratelimit import Bucket
from aigc_saas.accounts.services import find_key, touch_last_used
from aigc_saas.accounts.throttling import enforce, remember_taken, view_buckets
from aigc_saas.audit import context as audit_context


@dataclass
class ApiClient:
    """The authenticated caller: a tenant acting through one of its keys."""

    tenant: Tenant
    api_key: ApiKey
    is_authenticated: bool = True
    is_anonymous: bool = False

    @property
    def scopes(self) -> list[str]:
        return list(self.api_key.scopes or [])


def client_address(request: Any) -> str:
    """The client's address; X-Forwarded-For is trusted only through REST_FRAMEWORK's NUM_PROXIES."""
    return BaseThrottle().get_ident(request)


LOCKED_OUT = "`Authorization`: too many wrong API keys from this address"


def _failure_bucket(address: str, cost: int, need: int) -> Bucket:
    per_minute = settings.AIGC_AUTH_FAILURES_PER_MINUTE
    return Bucket(
        f"authfail:{address}",
        rate=per_minute / 60.0,
        capacity=per_minute,
        cost=cost,
        need=need,
        window=f"{per_minute} failed API key attempts/min per client address",
    )


def check_auth_lockout(request: Any) -> None:
    """Refuse every key from an address that has used up its failed attempts: no more guesses are checked."""
    decision = ratelimit.take_in_turn([_failure_bucket(client_address(request), cost=0, need=1)])[0]
    enforce(request, decision, LOCKED_OUT)


def record_auth_failure(request: Any) -> None:
    ratelimit.take_in_turn([_failure_bucket(client_address(request), cost=1, need=0)])


def _refuse_guess(request: Any, error: exceptions.AuthenticationFailed) -> None:
    """A wrong key: 429 while the address is locked out (whatever the key), else one failed attempt counted and
    `error`. One round trip: taking the attempt needs a token left, which is exactly the lockout check."""
    decision = ratelimit.take_in_turn([_failure_bucket(client_address(request), cost=1, need=1)])[0]
    enforce(request, decision, LOCKED_OUT)
    raise error


def _admit(request: Any, key: ApiKey) -> None:
    """A right key: 429 while its address is locked out (a locked-out address learns nothing about any key), and
    the view's own rate limits taken in the same round trip (the throttles enforce them: accounts.throttling)."""
    chosen = view_buckets(request, key)
    lockout = _failure_bucket(client_address(request), cost=0, need=1)
    decisions = ratelimit.take_in_turn([lockout, *(bucket for _, bucket in chosen)])
    enforce(request, decisions[0], LOCKED_OUT)
    remember_taken(request, [kind for kind, _ in chosen], decisions[1:])


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):  # noqa: ANN001, ANN201
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            _refuse_guess(
                request,
                exceptions.AuthenticationFailed(
                    "The `Authorization` header must be `Bearer <api key>`.", code="invalid_authorization_header"
                ),
            )
        key = find_key(raw.strip())
        if key is None or key.revoked_at is not None or not key.tenant.is_active:
            _refuse_guess(
                request, exceptions.AuthenticationFailed("The API key is unknown or revoked.", code="invalid_api_key")
            )
        if key.is_expired:
            check_auth_lockout(request)
            # Only the holder of the real secret gets here, so saying "expired" leaks nothing to a guesser.
            raise exceptions.AuthenticationFailed(
                f"`Authorization`: this API key expired at {key.expires_at.isoformat()}; ask for a new one.",
                code="api_key_expired",
            )
        _admit(request, key)
        touch_last_used(key)
        audit_context.set_api_key(key.prefix)
        return ApiClient(tenant=key.tenant, api_key=key), key

    def authenticate_header(self, request) -> str:  # noqa: ANN001
        return 'Bearer realm="api"'


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "aigc_saas.accounts.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):  # noqa: ANN001, ANN201
        return {"type": "http", "scheme": "bearer", "description": "An API key: `aigc_<prefix>_<secret>`."}
