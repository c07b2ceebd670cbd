"""The outbox's consumers as webhooks need them (real SQLite index): a consumer may report
that it got through the first part of a batch (the rest comes again at once), one of a single
tenant gets only that tenant's log, a slow consumer does not hold back the others, and the
set of consumers changes while the outbox runs."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from app.index.sqlite import SqliteIndex
from app.services.outbox import Outbox
from app.services.ports import Adding, Change
from tests.support.records import Records


class Partial:
    """Delivers at most `take` entries per call and says how far it got."""

    metadata = False

    def __init__(self, name: str, take: int = 1, tenant: str | None = None) -> None:
        self.name = name
        self.take = take
        if tenant is not None:
            self.tenant = tenant
        self.delivered: list[tuple[str, int]] = []
        self.hold: asyncio.Event | None = None

    async def deliver(self, tenant: str, changes: Sequence[Change]) -> int | None:
        if self.hold is not None:
            await self.hold.wait()
        done = changes[: self.take]
        self.delivered += [(tenant, c.sequence) for c in done]
        return None if len(done) == len(changes) else done[-1].sequence

    async def close(self) -> None:
        pass


async def _store(index: SqliteIndex, records: Records, tenant: str, count: int) -> None:
    await index.add_instances(
        [Adding(tenant, records.make(), overwrite=False) for _ in range(count)]
    )


def _cursors(path: Path, consumer: str) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT tenant, last_seq FROM change_cursor WHERE consumer = ?", (consumer,)
        ).fetchall()
    return {tenant: int(seq) for tenant, seq in rows}


async def _until(done: Callable[[], bool]) -> None:
    for _ in range(500):
        if done():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within 5 s")


def _outbox(index: SqliteIndex, *consumers: Partial) -> Outbox:
    return Outbox(index, consumers, batch=10, lease=10, poll_interval=0.01, retry_min=0.05)


async def test_a_partial_delivery_moves_the_cursor_as_far_as_it_got(
    index: SqliteIndex, tmp_path: Path
) -> None:
    await _store(index, Records(tmp_path / "files"), "clinic-a", 3)
    consumer = Partial("partial", take=2)
    assert await _outbox(index, consumer).run_once() == 3  # 1-2, then 3 at once
    assert consumer.delivered == [("clinic-a", 1), ("clinic-a", 2), ("clinic-a", 3)]
    assert _cursors(tmp_path / "index.sqlite", "partial") == {"clinic-a": 3}


async def test_a_consumer_of_one_tenant_gets_only_its_log(
    index: SqliteIndex, tmp_path: Path
) -> None:
    records = Records(tmp_path / "files")
    await _store(index, records, "clinic-a", 2)
    await _store(index, records, "clinic-b", 2)
    consumer = Partial("webhook:b", take=10, tenant="clinic-b")
    assert await _outbox(index, consumer).run_once() == 2
    assert consumer.delivered == [("clinic-b", 1), ("clinic-b", 2)]
    assert _cursors(tmp_path / "index.sqlite", "webhook:b") == {"clinic-b": 2}  # none in a


async def test_a_slow_consumer_holds_back_no_other_and_consumers_change_while_running(
    index: SqliteIndex, tmp_path: Path
) -> None:
    records = Records(tmp_path / "files")
    await _store(index, records, "clinic-a", 2)
    slow, fast, late = Partial("slow", 10), Partial("fast", 10), Partial("late", 10)
    slow.hold = asyncio.Event()
    outbox = _outbox(index, slow, fast)
    task = asyncio.create_task(outbox.run())
    try:
        await _until(lambda: len(fast.delivered) == 2)
        outbox.set_consumers([slow, late])  # fast removed, late added
        await _until(lambda: len(late.delivered) == 2)
        await _store(index, records, "clinic-a", 1)
        await _until(lambda: len(late.delivered) == 3)
        assert slow.delivered == []
        assert len(fast.delivered) == 2  # no longer served
        slow.hold.set()
        await _until(lambda: len(slow.delivered) == 3)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
