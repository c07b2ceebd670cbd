"""The outbox loop on a real SQLite index: a consumer gets each tenant's entries in order, the
cursor moves only after `deliver` returned, a failed or hung delivery is tried again after a
pause (the same entries), and a stop gives the node's leases up."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from app.index.sqlite import SqliteIndex
from app.services.outbox import Outbox
from app.services.ports import Adding, Change
from tests.support.records import Records

TENANTS = ("clinic-a", "clinic-b")


class Recorder:
    """A consumer that keeps what it was given; `fail` makes its next deliveries raise,
    `hold` makes them wait for the event."""

    def __init__(self, name: str = "recorder") -> None:
        self.name = name
        self.metadata = False
        self.delivered: list[tuple[str, int]] = []
        self.metadata_seen: list[bytes | None] = []
        self.attempts = 0
        self.fail = 0
        self.hold: asyncio.Event | None = None
        self.called = asyncio.Event()
        self.closed = False

    async def deliver(self, tenant: str, changes: Sequence[Change]) -> None:
        self.attempts += 1
        self.called.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.fail:
            self.fail -= 1
            raise ConnectionError("receiver unreachable")
        self.delivered += [(tenant, c.sequence) for c in changes]
        self.metadata_seen += [c.metadata for c in changes]

    async def close(self) -> None:
        self.closed = True


async def _store(index: SqliteIndex, records: Records, tenant: str, count: int) -> None:
    await index.add_instances(
        [Adding(tenant, records.make(), overwrite=False) for _ in range(count)]
    )


def _cursor(path: Path, consumer: str, tenant: str) -> int | None:
    with sqlite3.connect(path) as db:
        row = db.execute(
            "SELECT last_seq FROM change_cursor WHERE consumer = ? AND tenant = ?",
            (consumer, tenant),
        ).fetchone()
    return None if row is None else int(row[0])


def _outbox(index: SqliteIndex, consumer: Recorder, **options: float) -> Outbox:
    settings: dict[str, float] = {"lease": 10, "poll_interval": 0.01, "retry_min": 0.05}
    settings.update(options)
    return Outbox(index, [consumer], batch=2, **settings)  # type: ignore[arg-type]


async def test_every_tenant_entry_is_delivered_in_order_once(
    index: SqliteIndex, tmp_path: Path
) -> None:
    records = Records(tmp_path / "files")
    await _store(index, records, TENANTS[0], 3)
    await _store(index, records, TENANTS[1], 2)
    consumer = Recorder()
    outbox = _outbox(index, consumer)
    assert await outbox.run_once() == 5
    assert consumer.delivered == [
        ("clinic-a", 1), ("clinic-a", 2), ("clinic-a", 3), ("clinic-b", 1), ("clinic-b", 2)
    ]  # fmt: skip
    assert await outbox.run_once() == 0
    await _store(index, records, TENANTS[0], 1)
    assert await outbox.run_once() == 1
    assert consumer.delivered[-1] == ("clinic-a", 4)
    assert _cursor(tmp_path / "index.sqlite", "recorder", "clinic-a") == 4
    assert consumer.metadata_seen == [None] * 6


async def test_a_consumer_that_wants_metadata_gets_it(index: SqliteIndex, tmp_path: Path) -> None:
    await _store(index, Records(tmp_path / "files"), TENANTS[0], 1)
    consumer = Recorder()
    consumer.metadata = True
    assert await _outbox(index, consumer).run_once() == 1
    (metadata,) = consumer.metadata_seen
    assert metadata is not None and b'"00080018"' in metadata  # SOP Instance UID


async def test_cursor_moves_only_after_deliver_returned(index: SqliteIndex, tmp_path: Path) -> None:
    await _store(index, Records(tmp_path / "files"), TENANTS[0], 1)
    consumer = Recorder()
    consumer.hold = asyncio.Event()
    outbox = _outbox(index, consumer)
    running = asyncio.create_task(outbox.run_once())
    await asyncio.wait_for(consumer.called.wait(), 10)
    # Delivering: claimed, not advanced (a crash now delivers it again).
    assert _cursor(tmp_path / "index.sqlite", "recorder", "clinic-a") == 0
    consumer.hold.set()
    assert await running == 1
    assert _cursor(tmp_path / "index.sqlite", "recorder", "clinic-a") == 1


async def test_failed_delivery_is_retried_after_a_pause_with_the_same_entries(
    index: SqliteIndex, tmp_path: Path
) -> None:
    await _store(index, Records(tmp_path / "files"), TENANTS[0], 2)
    consumer = Recorder()
    consumer.fail = 2
    outbox = _outbox(index, consumer, retry_min=0.2)
    assert await outbox.run_once() == 0
    assert await outbox.run_once() == 0  # within the pause: not even tried
    assert consumer.attempts == 1
    assert _cursor(tmp_path / "index.sqlite", "recorder", "clinic-a") == 0
    await asyncio.sleep(0.25)
    assert await outbox.run_once() == 0  # second failure: the pause doubles
    await asyncio.sleep(0.25)
    assert await outbox.run_once() == 0
    assert consumer.attempts == 2
    await asyncio.sleep(0.2)
    assert await outbox.run_once() == 2
    assert consumer.delivered == [("clinic-a", 1), ("clinic-a", 2)]


async def test_hung_delivery_is_cut_off_at_half_the_lease(
    index: SqliteIndex, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await _store(index, Records(tmp_path / "files"), TENANTS[0], 1)
    consumer = Recorder()
    consumer.hold = asyncio.Event()  # never set: a receiver that never answers
    outbox = _outbox(index, consumer, lease=0.2)
    assert await asyncio.wait_for(outbox.run_once(), 1) == 0
    assert consumer.attempts == 1
    assert "1 entries of tenant clinic-a not delivered within 0.1 s" in caplog.text
    assert _cursor(tmp_path / "index.sqlite", "recorder", "clinic-a") == 0


async def test_run_keeps_delivering_new_entries_and_close_releases_the_lease(
    index: SqliteIndex, tmp_path: Path
) -> None:
    records = Records(tmp_path / "files")
    consumer = Recorder()
    outbox = _outbox(index, consumer)
    task = asyncio.create_task(outbox.run())
    await _store(index, records, TENANTS[0], 3)
    for _ in range(1000):  # 10 s at most, on a busy machine
        # Delivered and recorded: the cursor advances once deliver() has returned.
        if len(consumer.delivered) >= 3 and not await index.pending_tenants(
            "recorder", outbox.owner
        ):
            break
        await asyncio.sleep(0.01)
    assert consumer.delivered == [("clinic-a", 1), ("clinic-a", 2), ("clinic-a", 3)]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await outbox.close()
    assert consumer.closed
    # Released: another node takes the cursor at once, not after the lease.
    assert await index.claim_cursor("recorder", "clinic-a", "other-node", 10) == 3
