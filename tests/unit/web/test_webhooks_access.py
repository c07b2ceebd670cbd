"""Only admins of a tenant manage its webhook subscriptions: a signed-in caller without the
admin permission, or an admin of other tenants, gets 403 before the body, the query or the
id is looked at. The app and its archive (SQLite, folder) are the real ones."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.auth.principal import Permission, Principal
from app.main import open_archive
from app.services.archive import Archive
from app.settings import Settings
from app.web.app import create_app
from tests.support.asgi import lifespan
from tests.unit.web.test_audit_access import signed_in

READER = Principal("reader", frozenset({Permission.READ, Permission.WRITE}), None)
ADMIN_OF_A = Principal("admin-a", frozenset(Permission), frozenset({"a"}))
HOOK = "0" * 32


@pytest.fixture
async def archive(tmp_path: Path) -> AsyncIterator[Archive]:
    async with open_archive(Settings.from_env({}, data=tmp_path, dimse_port=0)) as opened:
        yield opened


@pytest.mark.parametrize(
    ("principal", "method", "path", "message"),
    [
        (READER, "GET", "/dicomweb/webhooks", "this request needs the admin permission"),
        (READER, "POST", "/dicomweb/webhooks", "this request needs the admin permission"),
        (READER, "GET", "/dicomweb/webhooks/nonsense", "this request needs the admin permission"),
        (READER, "DELETE", f"/dicomweb/webhooks/{HOOK}", "this request needs the admin permission"),
        (
            READER,
            "GET",
            f"/dicomweb/webhooks/{HOOK}/dead-letters?limit=-1",
            "this request needs the admin permission",
        ),
        (
            READER,
            "POST",
            f"/dicomweb/webhooks/{HOOK}/dead-letters/retry",
            "this request needs the admin permission",
        ),
        (ADMIN_OF_A, "GET", "/dicomweb/tenants/b/webhooks", "not allowed on tenant 'b'"),
        (ADMIN_OF_A, "POST", "/dicomweb/webhooks", "not allowed on tenant 'default'"),
    ],
)
async def test_refused(
    archive: Archive, principal: Principal, method: str, path: str, message: str
) -> None:
    app = create_app(lambda: contextlib.nullcontext(archive))
    transport = httpx.ASGITransport(app=signed_in(app, principal))
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=transport, base_url="http://pacs") as client,
    ):
        answer = await client.request(method, path, content=b"not json")
    assert answer.status_code == 403
    assert answer.json() == {"status": 403, "error": message}
    assert await archive.index.active_webhooks() == []


async def test_an_admin_of_the_tenant_may(archive: Archive) -> None:
    app = create_app(lambda: contextlib.nullcontext(archive))
    transport = httpx.ASGITransport(app=signed_in(app, ADMIN_OF_A))
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=transport, base_url="http://pacs") as client,
    ):
        answer = await client.post(
            "/dicomweb/tenants/a/webhooks", json={"url": "https://ai.example/hook"}
        )
        assert answer.status_code == 201, answer.text
        assert (await client.get("/dicomweb/tenants/a/webhooks")).status_code == 200
    [hook] = await archive.index.active_webhooks()
    assert hook.tenant == "a"
