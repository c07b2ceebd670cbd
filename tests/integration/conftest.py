"""The index backends under test, and instance records made from real DICOM files.

Every index test takes the `backend` fixture (or a module-scoped equivalent) and runs once
on SQLite and once on PostgreSQL: one suite, so that both implement one contract.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.index.postgres import PostgresIndex
from app.index.sqlite import SqliteIndex
from app.services.ports import Index
from tests.support.postgres import leftover_databases, require_postgres, temporary_database
from tests.support.records import Records

BACKENDS = ["sqlite", "postgres"]
# The tenant index tests write to and read from (not the default one: nothing may rely on it).
TENANT = "clinic-a"


@dataclass(frozen=True)
class Backend:
    """Where one test's index lives; `open` gives a new index object ("node") on it."""

    name: str
    location: str  # a SQLite file or a PostgreSQL URL

    async def open(self, *, pool_size: int = 10) -> Index:
        if self.name == "sqlite":
            return await SqliteIndex.open(Path(self.location))
        return await PostgresIndex.open(self.location, pool_size=pool_size)


@asynccontextmanager
async def new_backend(name: str, folder: Path) -> AsyncIterator[Backend]:
    """An empty backend of kind `name`, removed afterwards."""
    if name == "sqlite":
        yield Backend(name, str(folder / f"index-{uuid.uuid4().hex}.sqlite"))
        return
    require_postgres()
    async with temporary_database() as url:
        yield Backend(name, url)


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async with new_backend(request.param, tmp_path) as found:
        yield found


@pytest.fixture
async def index(backend: Backend) -> AsyncIterator[Index]:
    opened = await backend.open()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture(scope="session", autouse=True)
def no_database_left_behind() -> Iterator[None]:
    """After the session, every test database created is dropped."""
    yield
    left = leftover_databases()
    assert not left, f"test databases were not dropped: {sorted(left)}"


@pytest.fixture
def records(tmp_path: Path) -> Records:
    return Records(tmp_path / "files")
