"""What only the PostgreSQL index has: connection errors, its pool, deadlock retries."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from app.dicom.levels import Level
from app.index.migrations import IndexUnavailable
from app.index.postgres import INSTANCE_LOCK, INSTANCE_LOCK_CLASS, PostgresIndex
from app.query.qido import parse_qido
from app.services.ports import Outcome
from tests.integration.conftest import TENANT, Records
from tests.support.postgres import database_url, require_postgres, temporary_database
from tests.support.server import free_port


@pytest.fixture
async def url() -> AsyncIterator[str]:
    require_postgres()
    async with temporary_database() as found:
        yield found


async def test_an_unreachable_server_is_named_in_the_error() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(IndexUnavailable, match=rf"127\.0\.0\.1:{port}/pacs\b"):
        await PostgresIndex.open(f"postgresql://pacs:secret@127.0.0.1:{port}/pacs")


async def test_the_password_is_never_in_the_error() -> None:
    port = free_port()
    with pytest.raises(IndexUnavailable) as raised:
        await PostgresIndex.open(f"postgresql://pacs:hunter2@127.0.0.1:{port}/pacs")
    assert "hunter2" not in str(raised.value)
    assert "pacs@127.0.0.1" in str(raised.value)


async def test_a_missing_database_is_named_in_the_error() -> None:
    require_postgres()
    missing = database_url("pacs_test_missing_database")
    with pytest.raises(IndexUnavailable, match=r"pacs_test_missing_database.*does not exist"):
        await PostgresIndex.open(missing)


async def test_the_pool_holds_at_most_pool_size_connections(url: str, records: Records) -> None:
    index = await PostgresIndex.open(url, pool_size=3)
    try:
        await asyncio.gather(
            *(index.add_instance(TENANT, records.make(), overwrite=False) for _ in range(12)),
            *(index.search(TENANT, parse_qido([], Level.STUDY)) for _ in range(12)),
        )
        conn = await asyncpg.connect(url)
        try:
            used = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = 'pacs'"
            )
        finally:
            await conn.close()
        assert 1 <= used <= 3
    finally:
        await index.close()
    with pytest.raises(ValueError, match="pool size"):
        await PostgresIndex.open(url, pool_size=0)


async def _wait_for_lock_wait(conn: asyncpg.Connection) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'pacs' AND wait_event_type = 'Lock'"
        )
        if waiting:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the index never waited for the lock")


async def test_a_deadlocked_write_is_retried(
    url: str, records: Records, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.index.postgres")
    index = await PostgresIndex.open(url)
    blocker = await asyncpg.connect(url)
    observer = await asyncpg.connect(url)
    try:
        first = records.make()
        await index.add_instance(TENANT, first, overwrite=False)
        second = records.make(study=first.study_instance_uid)

        blocking = blocker.transaction()
        await blocking.start()
        await blocker.execute(
            "SELECT 1 FROM study WHERE study_instance_uid = $1 FOR UPDATE",
            first.study_instance_uid,
        )
        adding = asyncio.create_task(index.add_instance(TENANT, second, overwrite=False))
        await _wait_for_lock_wait(observer)  # it holds the instance lock, waits for the study
        # Now wait for the instance lock in turn: a cycle. The index's session has waited
        # longer, so its deadlock check (after deadlock_timeout, 1 s) runs first and
        # aborts its own transaction; the retry waits until the blocker is done.
        await blocker.execute(
            INSTANCE_LOCK,
            INSTANCE_LOCK_CLASS,
            TENANT,
            second.sop_instance_uid,
        )
        await blocking.rollback()
        result = await asyncio.wait_for(adding, 20)
    finally:
        for conn in (blocker, observer):
            await conn.close()
        await index.close()
    assert result.outcome is Outcome.STORED
    assert "DeadlockDetectedError" in caplog.text
