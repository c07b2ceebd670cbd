"""Only admins of a tenant read its audit trail: a signed-in caller without the admin
permission, or an admin of other tenants, gets 403 before anything else is looked at.
(The sign-in middleware puts the principal in the request scope; here a wrapper does.)"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from app.auth.principal import Permission, Principal
from app.services.archive import Archive
from app.web.access import PRINCIPAL_KEY
from app.web.app import create_app


@contextlib.asynccontextmanager
async def no_archive() -> AsyncIterator[Archive]:
    raise AssertionError("a refused request must not reach the archive")
    yield  # pragma: no cover


def signed_in(app: ASGIApp, principal: Principal) -> ASGIApp:
    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, "state": {**scope.get("state", {}), PRINCIPAL_KEY: principal}}
        await app(scope, receive, send)

    return wrapped


READER = Principal("reader", frozenset({Permission.READ}), None, address="10.0.0.1")
ADMIN_OF_A = Principal("admin-a", frozenset(Permission), frozenset({"a"}))


@pytest.mark.parametrize(
    ("principal", "path", "message"),
    [
        (READER, "/dicomweb/audit", "this request needs the admin permission"),
        (READER, "/dicomweb/audit?limit=nonsense", "this request needs the admin permission"),
        (READER, "/dicomweb/tenants/a/audit", "this request needs the admin permission"),
        (ADMIN_OF_A, "/dicomweb/tenants/b/audit", "not allowed on tenant 'b'"),
        (ADMIN_OF_A, "/dicomweb/audit", "not allowed on tenant 'default'"),
    ],
)
async def test_refused(principal: Principal, path: str, message: str) -> None:
    app = signed_in(create_app(no_archive), principal)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://pacs") as client:
        answer = await client.get(path)
    assert answer.status_code == 403
    assert answer.json() == {"status": 403, "error": message}
