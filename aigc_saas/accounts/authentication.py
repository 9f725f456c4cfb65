"""`Authorization: Bearer <key>` for every API call."""

from __future__ import annotations

from dataclasses import dataclass

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from aigc_saas.accounts.models import ApiKey, Tenant
from aigc_saas.accounts.services import authenticate_key


@dataclass
class ApiClient:
    """The authenticated caller: a tenant acting through one of its keys."""

    tenant: Tenant
    api_key: ApiKey
    is_authenticated: bool = True
    is_anonymous: bool = False


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):  # noqa: ANN001, ANN201
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            raise exceptions.AuthenticationFailed(
                "The `Authorization` header must be `Bearer <api key>`.", code="invalid_authorization_header"
            )
        key = authenticate_key(raw.strip())
        if key is None:
            raise exceptions.AuthenticationFailed("The API key is unknown or revoked.", code="invalid_api_key")
        return ApiClient(tenant=key.tenant, api_key=key), key

    def authenticate_header(self, request) -> str:  # noqa: ANN001
        return 'Bearer realm="api"'


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "aigc_saas.accounts.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):  # noqa: ANN001, ANN201
        return {"type": "http", "scheme": "bearer", "description": "An API key: `aigc_<prefix>_<secret>`."}
