"""Forwarding jobs through the admin API: only admins of a tenant list or retry its jobs
(403 before anything else is looked at), each sees its own tenant's jobs only, and every
bad parameter is a 400 that names it. The app and its archive (SQLite, folder) are the
real ones, lifespan included; the sign-in middleware's principal is put in by a wrapper."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.auth.principal import Permission, Principal
from app.main import open_archive
from app.services.archive import Archive
from app.services.ports import NewJob
from app.settings import Settings
from app.web.app import create_app
from tests.support.asgi import lifespan
from tests.unit.web.test_audit_access import signed_in

READER = Principal("reader", frozenset({Permission.READ}), None)
ADMIN_OF_A = Principal("admin-a", frozenset(Permission), frozenset({"a"}))


@pytest.fixture
async def archive(tmp_path: Path) -> AsyncIterator[Archive]:
    async with open_archive(Settings.from_env({}, data=tmp_path, dimse_port=0)) as opened:
        yield opened


@contextlib.asynccontextmanager
async def client(archive: Archive, principal: Principal) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(lambda: contextlib.nullcontext(archive))
    transport = httpx.ASGITransport(app=signed_in(app, principal))
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=transport, base_url="http://pacs/dicomweb") as http,
    ):
        yield http


@pytest.mark.parametrize(
    ("principal", "method", "path", "message"),
    [
        (READER, "GET", "/jobs", "this request needs the admin permission"),
        (READER, "GET", "/jobs?state=nonsense", "this request needs the admin permission"),
        (READER, "POST", "/jobs/1/retry", "this request needs the admin permission"),
        (ADMIN_OF_A, "GET", "/tenants/b/jobs", "not allowed on tenant 'b'"),
        (ADMIN_OF_A, "POST", "/jobs/1/retry", "not allowed on tenant 'default'"),
    ],
)
async def test_refused(
    archive: Archive, principal: Principal, method: str, path: str, message: str
) -> None:
    async with client(archive, principal) as http:
        answer = await http.request(method, path)
    assert answer.status_code == 403
    assert answer.json() == {"status": 403, "error": message}


async def test_an_admin_sees_and_retries_its_own_tenants_jobs(archive: Archive) -> None:
    # a's job first (higher priority): claimed and failed; b's stays queued.
    await archive.index.enqueue_jobs(
        [
            NewJob(t, "ct", "VIEWER@h:104", 1, "1.2.3", None, None, p)
            for t, p in (("a", 1), ("b", 0))
        ]
    )
    job = await archive.index.claim_job("node", 30)
    assert job is not None and job.tenant == "a"
    await archive.index.job_failed(job.id, "node", "refused", None)
    [other] = await archive.index.jobs("b", None, 10)
    async with client(archive, ADMIN_OF_A) as http:
        [listed] = (await http.get("/tenants/a/jobs")).json()
        assert (listed["id"], listed["state"], listed["lastError"]) == (job.id, "failed", "refused")
        assert (await http.get("/tenants/a/jobs", params={"state": "queued"})).json() == []
        # Another tenant's job is not there for it, failed or not.
        assert (await http.post(f"/tenants/a/jobs/{other.id}/retry")).status_code == 404
        retried = await http.post(f"/tenants/a/jobs/{job.id}/retry")
        assert retried.status_code == 200
        assert (retried.json()["state"], retried.json()["attempts"]) == ("queued", 0)
        # Queued now: not failed, so not retried again.
        again = await http.post(f"/tenants/a/jobs/{job.id}/retry")
        assert again.status_code == 404
        assert again.json()["error"] == f"no failed job {job.id} in tenant 'a'"


@pytest.mark.parametrize(
    ("method", "path", "message"),
    [
        ("GET", "/tenants/a/jobs?state=lost", "state='lost' is not one of"),
        ("GET", "/tenants/a/jobs?limit=0", "invalid limit"),
        ("GET", "/tenants/a/jobs?offset=1", "unknown query parameter 'offset'"),
        ("GET", "/tenants/a/jobs?state=done&state=failed", "'state' given more than once"),
        ("POST", "/tenants/a/jobs/x/retry", "job id 'x' is not a positive integer"),
    ],
)
async def test_bad_parameters_are_named(
    archive: Archive, method: str, path: str, message: str
) -> None:
    async with client(archive, ADMIN_OF_A) as http:
        answer = await http.request(method, path)
    assert answer.status_code == 400
    assert message in answer.json()["error"]
