"""The change log on both backends: every instance stored or replaced by `add_instances` makes
one entry in its transaction, numbered per tenant from 1, and a reader never sees a gap,
even while writers on two index objects ("nodes") commit concurrently."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import orjson
import pytest
from pydicom.uid import generate_uid

from app.index import postgres_changes
from app.index.change_rows import PendingChange
from app.services.ports import (
    Adding,
    Change,
    ChangeAction,
    ChangeState,
    Index,
    InstanceRecord,
    Outcome,
)
from tests.integration.conftest import TENANT, Backend, new_backend
from tests.support.poison import poison
from tests.support.records import Records

OTHER = "clinic-b"


def _adding(record: InstanceRecord, *, overwrite: bool = False, tenant: str = TENANT) -> Adding:
    return Adding(tenant, record, overwrite=overwrite)


def _summary(changes: list[Change]) -> list[tuple[int, str, str | None, str]]:
    return [(c.sequence, c.action, c.sop_instance_uid, c.state) for c in changes]


async def test_stored_and_replaced_instances_are_logged_in_order(
    index: Index, records: Records
) -> None:
    study = generate_uid()
    a, b = records.make(study=study), records.make(study=study)
    assert await index.changes(TENANT, 0, 10) == []
    assert await index.latest_change(TENANT) is None
    await index.add_instances([_adding(a), _adding(b)])
    # Nothing changed: the same bytes again, and other bytes refused without overwrite.
    other = records.make(study=study, sop=a.sop_instance_uid, seed=9)
    assert (
        await index.add_instance(TENANT, replace(a, blob_key="again"), overwrite=False)
    ).outcome is Outcome.IDENTICAL
    assert (await index.add_instance(TENANT, other, overwrite=False)).outcome is Outcome.CONFLICT
    assert (await index.add_instance(TENANT, other, overwrite=True)).outcome is Outcome.REPLACED

    found = await index.changes(TENANT, 0, 10, metadata=True)
    # One batch is numbered in the order it was applied (PostgreSQL: its lock order).
    if found[0].sop_instance_uid != a.sop_instance_uid:
        found[:2] = [found[1], found[0]]
    assert _summary(found) == [
        (found[0].sequence, ChangeAction.INSTANCE_STORED, a.sop_instance_uid, ChangeState.REPLACED),
        (found[1].sequence, ChangeAction.INSTANCE_STORED, b.sop_instance_uid, ChangeState.CURRENT),
        (3, ChangeAction.INSTANCE_REPLACED, a.sop_instance_uid, ChangeState.CURRENT),
    ]
    assert {found[0].sequence, found[1].sequence} == {1, 2}
    assert all(c.study_instance_uid == study for c in found)
    assert [c.series_instance_uid for c in found] == [
        a.series_instance_uid,
        b.series_instance_uid,
        other.series_instance_uid,
    ]
    # Metadata only of the version that is still stored, as stored.
    assert found[0].metadata is None
    assert found[1].metadata is not None
    assert orjson.loads(found[1].metadata)["00080018"]["Value"] == [b.sop_instance_uid]
    assert orjson.loads(found[2].metadata or b"{}")["00080018"]["Value"] == [a.sop_instance_uid]
    assert [c.metadata for c in await index.changes(TENANT, 0, 10)] == [None] * 3
    assert found[0].timestamp <= found[2].timestamp

    # Paging: after any sequence, bounded by the limit; beyond the last, nothing.
    assert [c.sequence for c in await index.changes(TENANT, 0, 2)] == [1, 2]
    assert [c.sequence for c in await index.changes(TENANT, 2, 2)] == [3]
    assert await index.changes(TENANT, 3, 10) == []
    assert await index.changes(TENANT, 2**63 - 1, 10) == []  # the largest offset asked
    latest = await index.latest_change(TENANT, metadata=True)
    assert latest is not None and latest.sequence == 3 and latest.metadata is not None


async def test_each_tenant_has_its_own_sequence(index: Index, records: Records) -> None:
    study = generate_uid()
    mine, theirs = records.make(study=study), records.make(study=study)
    await index.add_instances(
        [_adding(mine), _adding(theirs, tenant=OTHER), _adding(mine, tenant=OTHER)]
    )
    assert _summary(await index.changes(TENANT, 0, 10)) == [
        (1, ChangeAction.INSTANCE_STORED, mine.sop_instance_uid, ChangeState.CURRENT)
    ]
    theirs_found = await index.changes(OTHER, 0, 10)
    assert [c.sequence for c in theirs_found] == [1, 2]
    assert {c.sop_instance_uid for c in theirs_found} == {
        theirs.sop_instance_uid,
        mine.sop_instance_uid,
    }
    assert await index.changes("clinic-c", 0, 10) == []


async def test_failures_leave_no_entry_and_no_gap(
    backend: Backend, index: Index, records: Records
) -> None:
    study = generate_uid()
    batch = [records.make(study=study) for _ in range(3)]
    # A failed commit keeps none of the batch's entries, nor its numbers.
    await poison(backend.name, backend.location, batch[2].sop_instance_uid, at_commit=True)
    with pytest.raises(Exception, match=r"(?i)poisoned|foreign key"):
        await index.add_instances([_adding(r) for r in batch])
    assert await index.changes(TENANT, 0, 10) == []
    # An instance that fails alone makes no entry; the others are numbered without a gap.
    more = [records.make(study=study) for _ in range(3)]
    await poison(backend.name, backend.location, more[1].sop_instance_uid, at_commit=False)
    results = await index.add_instances([_adding(r) for r in [batch[0], *more]])
    assert isinstance(results[2], Exception)
    found = await index.changes(TENANT, 0, 10)
    assert [c.sequence for c in found] == [1, 2, 3]
    kept = {batch[0].sop_instance_uid, more[0].sop_instance_uid, more[2].sop_instance_uid}
    assert {c.sop_instance_uid for c in found} == kept


@pytest.fixture
async def two_nodes(backend: Backend) -> AsyncIterator[tuple[Index, Index]]:
    first = await backend.open(pool_size=4)
    second = await backend.open(pool_size=4)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


WRITERS, BATCHES, PER_BATCH = 6, 6, 3  # 108 instances


async def test_concurrent_writers_never_show_a_gap(
    two_nodes: tuple[Index, Index], records: Records
) -> None:
    """Batches commit concurrently through two index objects while a reader follows the
    log: every read is a gapless prefix 1..n of one final order, each longer read extends
    the previous one, and at the end every instance is there exactly once."""
    studies = [generate_uid() for _ in range(3)]
    rng = random.Random(3)
    work = [
        [
            [records.make(study=rng.choice(studies)) for _ in range(PER_BATCH)]
            for _ in range(BATCHES)
        ]
        for _ in range(WRITERS)
    ]
    writing = True
    reads: list[list[tuple[int, str | None]]] = []

    async def write(node: Index, batches: list[list[InstanceRecord]]) -> None:
        for batch in batches:
            results = await node.add_instances([_adding(r) for r in batch])
            assert all(not isinstance(r, Exception) for r in results), results

    async def follow(node: Index) -> None:
        while writing:
            found = await node.changes(TENANT, 0, 10_000)
            reads.append([(c.sequence, c.sop_instance_uid) for c in found])
            await asyncio.sleep(0)

    follower = asyncio.create_task(follow(two_nodes[1]))
    await asyncio.gather(*(write(two_nodes[w % 2], work[w]) for w in range(WRITERS)))
    writing = False
    await follower

    final = [
        (c.sequence, c.sop_instance_uid) for c in await two_nodes[0].changes(TENANT, 0, 10_000)
    ]
    stored = {r.sop_instance_uid for batches in work for batch in batches for r in batch}
    assert [seq for seq, _ in final] == list(range(1, len(stored) + 1))
    assert sorted(sop for _, sop in final if sop) == sorted(stored)
    assert len(reads) > 1
    for read in reads:
        assert read == final[: len(read)], "a read that is not a prefix of the final log"


# -- PostgreSQL: two transactions interleaved by hand ------------------------------------


@pytest.fixture
async def postgres(tmp_path: Path) -> AsyncIterator[Backend]:
    async with new_backend("postgres", tmp_path) as found:
        yield found


def _pending(name: str) -> PendingChange:
    return PendingChange(TENANT, ChangeAction.INSTANCE_STORED, "1.2.3", "1.2.3.4", name, name)


async def _blocked(task: asyncio.Task[None]) -> bool:
    """Whether `task` is still waiting after a moment (for a lock)."""
    await asyncio.sleep(0.3)
    return not task.done()


async def test_postgres_second_writer_takes_its_number_after_the_first_commits(
    postgres: Backend,
) -> None:
    """T1 takes sequence 1 and stays open; T2 must wait for T1's commit before it takes 2,
    so a reader cannot see 2 while 1 is uncommitted; and numbers of a transaction that rolls
    back are taken again (no hole). With a plain sequence T2 would not wait, and the reader
    would see 2 before 1."""
    index = await postgres.open(pool_size=2)
    conns = [await asyncpg.connect(postgres.location) for _ in range(2)]
    try:

        async def seen() -> list[str | None]:
            return [c.sop_instance_uid for c in await index.changes(TENANT, 0, 10)]

        t1, t2 = conns[0].transaction(), conns[1].transaction()
        await t1.start()
        await postgres_changes.record_changes(conns[0], [_pending("1.1")])
        await t2.start()
        second = asyncio.create_task(postgres_changes.record_changes(conns[1], [_pending("1.2")]))
        assert await _blocked(second), "the second writer took a number while the first was open"
        assert await seen() == []
        await t1.commit()
        await second
        assert await seen() == ["1.1"]  # T2 holds 2, uncommitted: nothing beyond 1
        await t2.commit()
        assert await seen() == ["1.1", "1.2"]

        # A rolled-back transaction's number is taken by the next one.
        t3, t4 = conns[0].transaction(), conns[1].transaction()
        await t3.start()
        await postgres_changes.record_changes(conns[0], [_pending("1.3")])
        await t4.start()
        fourth = asyncio.create_task(postgres_changes.record_changes(conns[1], [_pending("1.4")]))
        assert await _blocked(fourth)
        await t3.rollback()
        await fourth
        await t4.commit()
        found = await index.changes(TENANT, 0, 10)
        assert [(c.sequence, c.sop_instance_uid) for c in found] == [
            (1, "1.1"),
            (2, "1.2"),
            (3, "1.4"),
        ]
    finally:
        for conn in conns:
            await conn.close()
        await index.close()


async def test_an_action_of_a_newer_version_is_passed_on(backend: Backend, index: Index) -> None:
    """A node of a newer version sharing the index may write actions this one does not
    know (study.stable ...): they are read as they are, for consumers to skip, not a 500."""
    columns = "tenant, seq, action, changed_at, study_instance_uid"
    if backend.name == "sqlite":
        with sqlite3.connect(backend.location) as db:
            db.execute(
                f"INSERT INTO change_log ({columns}) VALUES (?, 1, 'study.stable', ?, '1.2.3')",
                (TENANT, "2026-01-02T03:04:05.678+00:00"),
            )
    else:
        conn = await asyncpg.connect(backend.location)
        try:
            await conn.execute(
                f"INSERT INTO change_log ({columns})"
                " VALUES ($1, 1, 'study.stable', now(), '1.2.3')",
                TENANT,
            )
        finally:
            await conn.close()
    (found,) = await index.changes(TENANT, 0, 10, metadata=True)
    assert (found.sequence, found.action, found.state) == (1, "study.stable", ChangeState.CURRENT)
    assert (found.series_instance_uid, found.sop_instance_uid, found.metadata) == (None, None, None)
