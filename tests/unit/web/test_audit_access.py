"""Only admins of a tenant read its audit trail: a signed-in caller without the admin
permission, or an admin of other tenants, gets 403 before anything else is looked at.
(The sign-in middleware puts the principal in the request scope; here a wrapper does.)
The app and its archive (SQLite, folder) are the real ones, lifespan included."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from app.audit.event import AuditAction, AuditEventType
from app.audit.query import AuditQuery
from app.auth.principal import DEFAULT_TENANT, Permission, Principal
from app.main import open_archive
from app.services.archive import Archive
from app.settings import Settings
from app.web.access import PRINCIPAL_KEY
from app.web.app import create_app
from app.web.auditing import sign_in_refused
from tests.support.asgi import lifespan


def signed_in(app: ASGIApp, principal: Principal) -> ASGIApp:
    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, "state": {**scope.get("state", {}), PRINCIPAL_KEY: principal}}
        await app(scope, receive, send)

    return wrapped


@pytest.fixture
async def archive(tmp_path: Path) -> AsyncIterator[Archive]:
    async with open_archive(Settings.from_env({}, data=tmp_path, dimse_port=0)) as opened:
        yield opened


READER = Principal("reader", frozenset({Permission.READ}), None, address="10.0.0.1")
ADMIN_OF_A = Principal("admin-a", frozenset(Permission), frozenset({"a"}))


@pytest.mark.parametrize(
    ("principal", "path", "tenant", "message"),
    [
        (READER, "/dicomweb/audit", "default", "this request needs the admin permission"),
        (
            READER,
            "/dicomweb/audit?limit=nonsense",
            "default",
            "this request needs the admin permission",
        ),
        (READER, "/dicomweb/tenants/a/audit", "a", "this request needs the admin permission"),
        (ADMIN_OF_A, "/dicomweb/tenants/b/audit", "b", "not allowed on tenant 'b'"),
        (ADMIN_OF_A, "/dicomweb/audit", "default", "not allowed on tenant 'default'"),
    ],
)
async def test_refused(
    archive: Archive, principal: Principal, path: str, tenant: str, message: str
) -> None:
    # Regression: with httpx.ASGITransport alone the lifespan never ran, so the app had
    # no archive and a request that got past the check could not have been noticed.
    app = create_app(lambda: contextlib.nullcontext(archive))
    transport = httpx.ASGITransport(app=signed_in(app, principal))
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=transport, base_url="http://pacs") as client,
    ):
        answer = await client.get(path)
    assert answer.status_code == 403
    assert answer.json() == {"status": 403, "error": message}
    await archive.audit.flush()
    # The refusal is in the trail; a search of the trail (Audit Log Used) is not.
    [event] = await archive.index.search_audit(tenant, AuditQuery())
    assert (event.action, event.event_type) == (
        AuditAction.SECURITY_ALERT,
        AuditEventType.USE_OF_RESTRICTED_FUNCTION,
    )
    assert event.subject == principal.subject


async def test_a_401_is_kept_in_the_default_tenants_trail(archive: Archive) -> None:
    """Regression: a caller nobody signed in put events into the trail of whichever tenant
    its URL named."""
    challenge = 'Bearer realm="pacs", error="invalid_token"'
    path = "/dicomweb/tenants/clinic-b/studies/1.2.3.4/series"
    sign_in_refused(archive, "203.0.113.9", path, challenge)
    await archive.audit.flush()
    assert await archive.index.search_audit("clinic-b", AuditQuery()) == []
    [event] = await archive.index.search_audit(DEFAULT_TENANT, AuditQuery())
    assert event.action is AuditAction.USER_AUTHENTICATION
    assert event.reason == f"{challenge} (the URL names tenant 'clinic-b')"
    # Not clinic-b's UIDs: the default tenant's trail names only the tenant.
    assert event.called == "/dicomweb/tenants/clinic-b/..."
    assert event.address == "203.0.113.9"
