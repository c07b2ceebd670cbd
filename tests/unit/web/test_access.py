"""Who may do what, as the web layer enforces it: the principal the sign-in middleware puts
in the request scope, on the tenant of the URL. The app and its archive (SQLite, folder)
are the real ones; a small middleware stands in for sign-in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from app.auth.principal import Permission, Principal
from app.main import open_archive
from app.settings import Settings
from app.web.access import PRINCIPAL_KEY
from app.web.app import create_app
from tests.support.asgi import lifespan
from tests.support.dicom_factory import make_file

READER = Principal("reader", frozenset({Permission.READ}), frozenset({"clinic-a"}))


class SignedIn:
    def __init__(self, app: ASGIApp, principal: Principal) -> None:
        self.app = app
        self.principal = principal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})[PRINCIPAL_KEY] = self.principal
        await self.app(scope, receive, send)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings.from_env({}, data=tmp_path, dimse_port=0)
    app = create_app(lambda: open_archive(settings))
    transport = httpx.ASGITransport(app=SignedIn(app, READER))
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=transport, base_url="http://pacs") as http,
    ):
        yield http


async def test_a_reader_reads_its_own_tenant(client: httpx.AsyncClient) -> None:
    assert (await client.get("/dicomweb/tenants/clinic-a/studies")).json() == []
    response = await client.get("/dicomweb/tenants/clinic-a/studies/1.2.3/metadata")
    assert response.status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/dicomweb/studies",
        "/dicomweb/tenants/clinic-b/studies",
        "/dicomweb/tenants/clinic-b/studies/1.2.3/metadata",  # 403, not 404: no hint
        "/dicomweb/tenants/clinic-b/studies/1.2.3/series/4.5/instances/6.7/frames/1",
        "/dicomweb/tenants/clinic-b/wado?requestType=WADO&studyUID=1.2&seriesUID=1.3&objectUID=1.4",
        "/wado?requestType=WADO&studyUID=1.2&seriesUID=1.3&objectUID=1.4",
    ],
)
async def test_another_tenant_is_403(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 403
    assert "not allowed on tenant" in response.json()["error"]


async def test_storing_without_write_is_403_and_stores_nothing(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/dicomweb/tenants/clinic-a/studies",
        content=make_file(),
        headers={"Content-Type": "application/dicom"},
    )
    assert response.status_code == 403
    assert "needs the write permission" in response.json()["error"]
    assert (await client.get("/dicomweb/tenants/clinic-a/studies")).json() == []


async def test_a_malformed_tenant_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/dicomweb/tenants/Clinic%20A/studies")
    assert response.status_code == 400
    assert "invalid tenant" in response.json()["error"]
