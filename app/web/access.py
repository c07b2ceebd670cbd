"""The `Access` of an HTTP request: its principal (set by the sign-in middleware) and the
tenant named by the URL (`/dicomweb/tenants/{tenant}/...`; the plain routes mean the default)."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from app.auth.principal import DEFAULT_TENANT, Access, Principal, anonymous, check_tenant
from app.web.proxies import client_address

PRINCIPAL_KEY = "principal"


def request_principal(request: HTTPConnection) -> Principal:
    found = request.scope.get("state", {}).get(PRINCIPAL_KEY)
    if isinstance(found, Principal):
        return found
    # No sign-in middleware in front of this app: the archive runs without sign-in.
    return anonymous(client_address(request) or None)


def request_access(request: HTTPConnection) -> Access:
    tenant = request.path_params.get("tenant", DEFAULT_TENANT)
    return Access(request_principal(request), check_tenant(tenant))
