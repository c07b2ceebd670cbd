"""The `Access` of an HTTP request: its principal (set by the sign-in middleware) and the
tenant named by the URL (`/dicomweb/tenants/{tenant}/...`; the plain routes mean the default)."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from app.auth.principal import (
    DEFAULT_TENANT,
    Access,
    Forbidden,
    Principal,
    anonymous,
    check_tenant,
)
from app.web.proxies import client_address

PRINCIPAL_KEY = "principal"


ANONYMOUS_ALLOWED_KEY = "anonymous_allowed"


def request_principal(request: HTTPConnection) -> Principal:
    found = request.scope.get("state", {}).get(PRINCIPAL_KEY)
    if isinstance(found, Principal):
        return found
    # Only an app built without sign-in serves callers the middleware did not identify;
    # otherwise a request that got past it without a principal is refused, not trusted.
    if getattr(request.app.state, ANONYMOUS_ALLOWED_KEY, False) is not True:
        raise Forbidden("this request was not signed in")
    return anonymous(client_address(request) or None)


def request_access(request: HTTPConnection) -> Access:
    tenant = request.path_params.get("tenant", DEFAULT_TENANT)
    return Access(request_principal(request), check_tenant(tenant))
