"""The index backends under test, and instance records made from real DICOM files.

Every index test takes the `backend` fixture (or a module-scoped equivalent) and runs once
on SQLite and once on PostgreSQL: one suite, so that both implement one contract.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.dicom.parse import parse_instance
from app.index.postgres import PostgresIndex
from app.index.sqlite import SqliteIndex
from app.services.ports import Index, InstanceRecord
from tests.support.dicom_factory import make_file
from tests.support.postgres import leftover_databases, require_postgres, temporary_database

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


class Records:
    """InstanceRecords as the store service makes them, from files written and parsed here.

    Blob keys are synthetic; size and SHA-256 are those of the file.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def make(self, **attrs: Any) -> InstanceRecord:
        data = make_file(**attrs)
        path = self.folder / f"{uuid.uuid4().hex}.dcm"
        path.write_bytes(data)
        parsed = parse_instance(path)
        return InstanceRecord(
            study_instance_uid=parsed.study_instance_uid,
            series_instance_uid=parsed.series_instance_uid,
            sop_instance_uid=parsed.sop_instance_uid,
            sop_class_uid=parsed.sop_class_uid,
            transfer_syntax_uid=parsed.transfer_syntax_uid,
            blob_key=uuid.uuid4().hex,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            encapsulated=parsed.encapsulated,
            frames=parsed.frames,
            bulk=parsed.bulk,
            metadata=parsed.metadata,
            patient_id=_patient_id(parsed.metadata),
        )


def _patient_id(metadata: dict[str, Any]) -> str | None:
    values = metadata.get("00100020", {}).get("Value")
    return str(values[0]) if values else None


@pytest.fixture
def records(tmp_path: Path) -> Records:
    return Records(tmp_path / "files")
