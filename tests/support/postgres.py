"""Throw-away PostgreSQL databases for tests.

The server is given by `PACS_TEST_POSTGRES_URL` (an account allowed to create databases);
each test database is named `pacs_test_<hex>` so that leftovers are easy to spot.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from functools import cache
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

ADMIN_URL = os.environ.get(
    "PACS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PREFIX = "pacs_test_"
_DROP_ATTEMPTS = 60
# Names of the databases this process created, to check that none is left behind.
CREATED: set[str] = set()


def database_url(name: str, admin_url: str = ADMIN_URL) -> str:
    """`admin_url` pointing at the database `name` instead."""
    parts = urlsplit(admin_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _probe() -> None:
    conn = await asyncpg.connect(ADMIN_URL, timeout=3)
    await conn.close()


@cache
def postgres_available() -> bool:
    """Whether the test server answers (checked once; safe inside a running event loop)."""
    with ThreadPoolExecutor(1) as pool:
        try:
            pool.submit(asyncio.run, _probe()).result()
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
    return True


def require_postgres() -> None:
    """Skip the calling test when PostgreSQL is unreachable; fail instead in CI, where a
    missing service is a broken build, not an optional extra."""
    if postgres_available():
        return
    message = f"PostgreSQL is not reachable at {ADMIN_URL} (set PACS_TEST_POSTGRES_URL)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


async def create_database() -> str:
    """Create an empty, uniquely named database; return its URL."""
    name = f"{PREFIX}{uuid.uuid4().hex}"
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        CREATED.add(name)
    finally:
        await conn.close()
    return database_url(name)


async def drop_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    assert name.startswith(PREFIX), name
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        for attempt in range(_DROP_ATTEMPTS):
            try:
                # FORCE: a test that failed half-way may have left a connection open.
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except asyncpg.InsufficientPrivilegeError:
                # An autovacuum worker is in the database (after a test's bulk insert), and
                # FORCE may not terminate it without pg_signal_backend: it ends soon.
                if attempt == _DROP_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.5)
    finally:
        await conn.close()


@asynccontextmanager
async def temporary_database() -> AsyncIterator[str]:
    """The URL of a new empty database, dropped on exit."""
    url = await create_database()
    try:
        yield url
    finally:
        await drop_database(url)


async def _databases() -> set[str]:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database")
    finally:
        await conn.close()
    return {r[0] for r in rows}


def leftover_databases() -> set[str]:
    """Databases created by this process that still exist (other test runs may share the
    server, so their `pacs_test_` databases are not counted)."""
    if not CREATED:
        return set()
    with ThreadPoolExecutor(1) as pool:
        existing = pool.submit(asyncio.run, _databases()).result()
    return existing & CREATED


@contextmanager
def index_backend_env(backend: str) -> Iterator[dict[str, str]]:
    """The server environment for the index backend `backend` ("sqlite": the embedded
    default, nothing to set; "postgres": a new database, dropped on exit)."""
    if backend != "postgres":
        yield {}
        return
    require_postgres()
    url = asyncio.run(create_database())
    try:
        yield {"PACS_DATABASE_URL": url}
    finally:
        asyncio.run(drop_database(url))
