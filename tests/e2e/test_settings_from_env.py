"""Settings reach the running server from its environment: `pacs serve` started with a PACS_*
variable behaves as the README's Settings table says, observed from outside (HTTP, and for the
production backends PostgreSQL's own view of its connections and S3's view of the object).

One server start per backend shape, several settings at once where they cannot interfere:
each setting has its own test, and its value differs from the default so that a setting that
does not arrive fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from pydicom.uid import generate_uid

from tests.conformance.helpers import stow_ok, token
from tests.support.dicom_factory import make_file
from tests.support.production import bucket_object_heads, production_backends
from tests.support.server import running_server

ALLOWED = "http://viewer.example"
ALSO_ALLOWED = "http://other-viewer.example"
REFUSED = "http://elsewhere.example"
DEFAULT_LIMIT, MAX_LIMIT = 2, 3  # defaults: 100 and 1000
STUDIES = 5  # more than either limit

POOL_SIZE = 2  # default 10
PART_SIZE = 5 * 1024 * 1024  # default 16 MiB; S3's smallest part
CONCURRENT_QUERIES = 24


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DICOMweb root of a server on the embedded backends with the HTTP settings changed."""
    env = {
        "PACS_CORS_ORIGINS": f"{ALLOWED}, {ALSO_ALLOWED}",
        "PACS_QIDO_DEFAULT_LIMIT": str(DEFAULT_LIMIT),
        "PACS_QIDO_MAX_LIMIT": str(MAX_LIMIT),
    }
    with running_server(tmp_path_factory.mktemp("settings") / "data", env=env) as url:
        yield f"{url}/dicomweb"


def test_cors_origins_from_the_environment(embedded: str) -> None:
    with httpx.Client(base_url=embedded, timeout=30) as http:
        for origin in (ALLOWED, ALSO_ALLOWED):
            response = http.get("/studies", headers={"Origin": origin})
            assert response.status_code == 200, response.text
            assert response.headers.get("access-control-allow-origin") == origin
        response = http.get("/studies", headers={"Origin": REFUSED})
        assert "access-control-allow-origin" not in response.headers  # the default "*" allows it
        preflight = {"Origin": REFUSED, "Access-Control-Request-Method": "GET"}
        assert http.options("/studies", headers=preflight).status_code == 400
        preflight["Origin"] = ALLOWED
        response = http.options("/studies", headers=preflight)
        assert response.status_code == 200
        assert response.headers.get("access-control-allow-origin") == ALLOWED


@pytest.fixture(scope="module")
def patient(embedded: str) -> str:
    """A patient of STUDIES studies on the embedded server."""
    patient_id = token()
    files = [make_file(study=generate_uid(), PatientID=patient_id) for _ in range(STUDIES)]
    with httpx.Client(base_url=embedded, timeout=30) as http:
        stow_ok(http, files)
    return patient_id


def _studies(embedded: str, patient: str, **params: str) -> int:
    response = httpx.get(f"{embedded}/studies", params={"PatientID": patient, **params}, timeout=30)
    assert response.status_code == 200, response.text
    return len(response.json())


def test_qido_default_limit_from_the_environment(embedded: str, patient: str) -> None:
    assert _studies(embedded, patient) == DEFAULT_LIMIT
    assert _studies(embedded, patient, limit="1") == 1


def test_qido_max_limit_from_the_environment(embedded: str, patient: str) -> None:
    assert _studies(embedded, patient, limit=str(MAX_LIMIT)) == MAX_LIMIT
    assert _studies(embedded, patient, limit="100") == MAX_LIMIT  # clamped, not refused


@dataclass
class Production:
    dicomweb: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Production]:
    """A server on PostgreSQL and S3 (moto) with the pool and part sizes changed."""
    root = tmp_path_factory.mktemp("production-settings")
    with production_backends(root) as backends:
        env = {
            **backends,
            "PACS_DATABASE_POOL_SIZE": str(POOL_SIZE),
            "PACS_S3_PART_SIZE": str(PART_SIZE),
        }
        with running_server(root / "data", env=env) as url:
            yield Production(f"{url}/dicomweb", backends)


async def _connections(database_url: str) -> int:
    """Connections PostgreSQL counts to the server's database, other than this one."""
    conn = await asyncpg.connect(database_url)
    try:
        count = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return int(count)


def test_database_pool_size_from_the_environment(production: Production) -> None:
    """Many queries at once: the pool grows to its size and no further (asyncpg keeps idle
    connections open for minutes, so PostgreSQL still counts them afterwards). With the
    default of 10 the same burst opens all 10 (measured)."""

    def query(_: int) -> int:
        response = httpx.get(f"{production.dicomweb}/studies", params={"limit": "1"}, timeout=60)
        return response.status_code

    with ThreadPoolExecutor(CONCURRENT_QUERIES) as pool:
        statuses = list(pool.map(query, range(CONCURRENT_QUERIES)))
    assert statuses == [200] * CONCURRENT_QUERIES
    connections = asyncio.run(_connections(production.env["PACS_DATABASE_URL"]))
    assert 1 <= connections <= POOL_SIZE, connections


def test_s3_part_size_from_the_environment(production: Production) -> None:
    """An instance of about 6 MiB, between the part size set (5 MiB) and the default (16 MiB):
    it goes up as a multipart upload of two parts, whose ETag says so ("<md5>-2")."""
    study = generate_uid()
    data = make_file(study=study, rows=1600, columns=2000, PatientID=token())
    assert PART_SIZE < len(data) <= 2 * PART_SIZE
    with httpx.Client(base_url=production.dicomweb, timeout=60) as http:
        stow_ok(http, [data])
    heads = bucket_object_heads(production.env)
    [head] = [h for h in heads.values() if h["ContentLength"] == len(data)]
    assert head["ETag"].strip('"').endswith("-2"), head["ETag"]
