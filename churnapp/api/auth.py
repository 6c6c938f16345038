"""API authentication: per-tenant API keys (`Authorization: Api-Key <key>`) or a
dashboard session of a user who is an agent of a tenant. Either way the view reads the
tenant from `request.tenant`, and only from there."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from churnapp.models import Tenant
from churnapp.services.api_keys import api_key_authenticate

KEYWORD = "Api-Key"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        if scheme.lower() not in (KEYWORD.lower(), "bearer"):
            return None
        raw = raw.strip()
        if not raw:
            raise exceptions.AuthenticationFailed("Empty API key.")
        api_key = api_key_authenticate(raw_key=raw)
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        request._request.tenant = api_key.tenant
        return (None, api_key)

    def authenticate_header(self, request) -> str:
        return KEYWORD


def tenant_for_request(request) -> Tenant | None:
    """The caller's tenant: from the API key, else from the session user's agent row."""
    tenant = getattr(request._request, "tenant", None) if hasattr(request, "_request") else None
    if tenant is not None:
        return tenant
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        agent = getattr(user, "agent", None)
        if agent is not None and agent.tenant.is_active:
            return agent.tenant
    return None


class HasTenant(permissions.BasePermission):
    """Allows the request only when it resolves to exactly one active tenant."""

    message = "Authenticate with a tenant API key (Authorization: Api-Key <key>)."

    def has_permission(self, request, view) -> bool:
        tenant = tenant_for_request(request)
        if tenant is None or not tenant.is_active:
            return False
        request.tenant = tenant
        return True


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = ApiKeyAuthentication
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key <key>` as printed by `manage.py tenant_create`.",
        }
