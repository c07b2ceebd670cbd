"""Stable series and studies on both backends (`Index.announce_stable`): exactly one
series.stable per series and one study.stable per study per quiet period, with the counts
at that moment, again after new arrivals, never for what was deleted, and once only when
two index objects ("nodes") announce at the same time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncpg
import pytest
from pydicom.uid import generate_uid

from app.index.rows import FOLD_AT
from app.services import stable
from app.services.ports import Adding, Change, ChangeAction, Index, InstanceRecord
from tests.integration.conftest import TENANT, Backend, new_backend
from tests.support.records import Records

OTHER = "clinic-b"
NOW = 0.0  # a quiet time every arrival so far has had
NEVER = 3600.0  # a quiet time none has had
STABLE = (ChangeAction.SERIES_STABLE, ChangeAction.STUDY_STABLE)

Announced = tuple[str, str | None, dict[str, object] | None]


async def _add(index: Index, records: Sequence[InstanceRecord], tenant: str = TENANT) -> None:
    results = await index.add_instances([Adding(tenant, r, overwrite=False) for r in records])
    assert not [r for r in results if isinstance(r, Exception)], results


async def _announced(index: Index, after: int = 0, tenant: str = TENANT) -> list[Announced]:
    """The stable entries of the log after `after`: (action, series, counts)."""
    found: list[Change] = await index.changes(tenant, after, 1000)
    return [(str(c.action), c.series_instance_uid, c.detail) for c in found if c.action in STABLE]


def _series(uid: str, instances: int) -> Announced:
    return ("series.stable", uid, {"NumberOfSeriesRelatedInstances": instances})


def _study(series: int, instances: int) -> Announced:
    counts: dict[str, object] = {
        "NumberOfStudyRelatedSeries": series,
        "NumberOfStudyRelatedInstances": instances,
    }
    return ("study.stable", None, counts)


async def test_a_quiet_study_is_announced_once_with_its_counts(
    index: Index, records: Records
) -> None:
    study, ct, mr = generate_uid(), generate_uid(), generate_uid()
    await _add(index, [records.make(study=study, series=ct, seed=n) for n in range(3)])
    await _add(index, [records.make(study=study, series=mr, Modality="MR")])
    # Not quiet yet: nothing announced, and the instances' own entries only.
    assert await index.announce_stable(NEVER, 100) == {}
    assert await index.announce_stable(0.4, 100) == {}
    assert await _announced(index) == []
    await asyncio.sleep(0.5)  # the quiet time passes

    assert await index.announce_stable(0.4, 100) == {TENANT: 3}
    found = await index.changes(TENANT, 0, 100)
    assert [c.sequence for c in found] == [1, 2, 3, 4, 5, 6, 7]
    # After the instances, the series of the study before the study itself.
    assert await _announced(index) == [*sorted([_series(ct, 3), _series(mr, 1)]), _study(2, 4)]
    assert {(c.study_instance_uid, c.sop_instance_uid) for c in found[4:]} == {(study, None)}
    # Once per quiet period: asked again, on and on, nothing more.
    assert await index.announce_stable(NOW, 100) == {}
    assert len(await index.changes(TENANT, 0, 100)) == 7


async def test_new_instances_announce_again_after_the_next_quiet_period(
    index: Index, records: Records
) -> None:
    study, ct, mr = generate_uid(), generate_uid(), generate_uid()
    first = [records.make(study=study, series=ct, seed=n) for n in range(2)]
    await _add(index, first)
    assert await index.announce_stable(NOW, 100) == {TENANT: 2}
    seen = (await index.latest_change(TENANT) or pytest.fail("empty log")).sequence

    # A new series arrives, and the same bytes again (nothing changed: no arrival).
    await _add(index, [records.make(study=study, series=mr, Modality="MR"), first[0]])
    assert await index.announce_stable(NEVER, 100) == {}
    assert await index.announce_stable(NOW, 100) == {TENANT: 2}
    # The quiet series is not announced again; the study is, with what it has now.
    assert await _announced(index, seen) == [_series(mr, 1), _study(2, 3)]
    await _add(index, [first[0]])
    assert await index.announce_stable(NOW, 100) == {}


async def test_counts_include_instances_not_yet_folded(index: Index, records: Records) -> None:
    """More than FOLD_AT instances: the stored count holds some, the rest are counted."""
    study, series = generate_uid(), generate_uid()
    many = [records.make(study=study, series=series, seed=n) for n in range(FOLD_AT + 3)]
    await _add(index, many[:FOLD_AT])
    await _add(index, many[FOLD_AT:])
    await index.announce_stable(NOW, 100)
    assert await _announced(index) == [_series(series, FOLD_AT + 3), _study(1, FOLD_AT + 3)]


async def test_a_deleted_study_is_never_announced(index: Index, records: Records) -> None:
    gone, kept = generate_uid(), generate_uid()
    await _add(index, [records.make(study=gone), records.make(study=kept)])
    await index.delete(TENANT, gone)
    assert await index.announce_stable(NOW, 100) == {TENANT: 2}
    assert {
        c.study_instance_uid for c in await index.changes(TENANT, 0, 100) if c.action in STABLE
    } == {kept}
    # Stored again after the delete: a new study, announced after its own quiet period.
    await _add(index, [records.make(study=gone)])
    assert await index.announce_stable(NOW, 100) == {TENANT: 2}


async def test_a_partly_deleted_study_is_announced_with_what_remains(
    index: Index, records: Records
) -> None:
    """A delete is not an arrival: a study deleted in part during its quiet period is
    announced once, with what remains; an announced one is not announced again."""
    study, ct, mr = generate_uid(), generate_uid(), generate_uid()
    await _add(index, [records.make(study=study, series=ct, seed=n) for n in range(3)])
    await _add(index, [records.make(study=study, series=mr, Modality="MR")])
    await index.delete(TENANT, study, mr)
    assert await index.announce_stable(NOW, 100) == {TENANT: 2}
    assert await _announced(index) == [_series(ct, 3), _study(1, 3)]
    seen = (await index.latest_change(TENANT) or pytest.fail("empty log")).sequence

    gone = (await index.instances(TENANT, study, ct))[0].sop_instance_uid
    await index.delete(TENANT, study, ct, gone)
    assert await index.announce_stable(NOW, 100) == {}
    assert await _announced(index, seen) == []


async def test_each_tenant_is_announced_in_its_own_log(index: Index, records: Records) -> None:
    study, series = generate_uid(), generate_uid()
    record = records.make(study=study, series=series)
    await _add(index, [record])
    await _add(index, [record, records.make(study=study, series=series)], tenant=OTHER)
    assert await index.announce_stable(NOW, 100) == {TENANT: 2, OTHER: 2}
    assert await _announced(index) == [_series(series, 1), _study(1, 1)]
    assert await _announced(index, tenant=OTHER) == [_series(series, 2), _study(1, 2)]


async def test_a_round_announces_at_most_its_limit(index: Index, records: Records) -> None:
    await _add(index, [records.make() for _ in range(3)])  # 3 studies: 6 entries
    assert sum((await index.announce_stable(NOW, 4)).values()) == 4
    assert sum((await index.announce_stable(NOW, 4)).values()) == 2
    assert len(await _announced(index)) == 6


async def test_the_service_announces_round_after_round_until_none_is_left(
    index: Index, records: Records
) -> None:
    await _add(index, [records.make() for _ in range(3)], tenant=OTHER)
    await _add(index, [records.make()])
    woken: list[str] = []
    assert await stable.announce_stable(index, NOW, changed=woken.append, batch=3) == 8
    assert sorted(set(woken)) == sorted([OTHER, TENANT])
    assert len(await _announced(index, tenant=OTHER)) == 6
    assert await stable.announce_stable(index, NOW, batch=3) == 0


@pytest.fixture
async def two_nodes(backend: Backend) -> AsyncIterator[tuple[Index, Index]]:
    first = await backend.open(pool_size=4)
    second = await backend.open(pool_size=4)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


async def test_two_nodes_announcing_at_once_announce_each_study_once(
    two_nodes: tuple[Index, Index], records: Records
) -> None:
    """Both nodes scan at the same time, again and again, in small rounds, while one
    stores: every series and study is announced exactly once between them."""
    studies = [generate_uid() for _ in range(16)]
    batches = [
        [records.make(study=study, series=series, seed=n) for n in range(2)]
        for study, series in ((study, generate_uid()) for study in studies)
    ]
    for batch in batches[:10]:
        await _add(two_nodes[0], batch)

    async def scan(node: Index) -> None:
        for _ in range(12):
            await node.announce_stable(NOW, 2)
            await asyncio.sleep(0)

    async def store() -> None:
        for batch in batches[10:]:  # each study in one batch: one quiet period each
            await _add(two_nodes[0], batch)

    await asyncio.gather(scan(two_nodes[0]), scan(two_nodes[1]), scan(two_nodes[1]), store())
    await two_nodes[0].announce_stable(NOW, 1000)
    found = [c for c in await two_nodes[1].changes(TENANT, 0, 1000) if c.action in STABLE]
    studies_announced = [c.study_instance_uid for c in found if c.series_instance_uid is None]
    assert sorted(studies_announced) == sorted(studies)
    assert len(found) == 2 * len(studies)
    assert {str(c.detail) for c in found if c.series_instance_uid is None} == {str(_study(1, 2)[2])}


# -- PostgreSQL: a scan beside an ingest in progress --------------------------------------


@pytest.fixture
async def postgres(tmp_path: Path) -> AsyncIterator[Backend]:
    async with new_backend("postgres", tmp_path) as found:
        yield found


async def test_a_scan_skips_a_study_being_written_without_waiting(
    postgres: Backend, records: Records
) -> None:
    """While an ingest holds a study's row (its instance is arriving), another node's scan
    passes it by at once rather than waiting for the commit, and announces the rest."""
    index = await postgres.open(pool_size=2)
    busy, quiet = generate_uid(), generate_uid()
    conn = await asyncpg.connect(postgres.location)
    try:
        await _add(index, [records.make(study=busy), records.make(study=quiet)])
        async with conn.transaction():
            await conn.execute(
                "SELECT 1 FROM stable_pending WHERE study_instance_uid = $1 FOR UPDATE", busy
            )
            announced = await asyncio.wait_for(index.announce_stable(NOW, 100), 5)
            assert announced == {TENANT: 2}
        found = await _announced(index)
        assert [a for a, _, _ in found] == ["series.stable", "study.stable"]
        # Once the ingest has gone, the study is announced by the next scan.
        assert await index.announce_stable(NOW, 100) == {TENANT: 2}
    finally:
        await conn.close()
        await index.close()


async def test_an_ingest_that_waited_for_a_lock_is_not_quiet_at_its_commit(
    postgres: Backend, records: Records
) -> None:
    """The arrival is stamped just before the commit, not at the transaction's start: an
    ingest that waited 1.2 s for a study's row has not been quiet for a second when it
    commits."""
    index = await postgres.open(pool_size=2)
    study, series = generate_uid(), generate_uid()
    conn = await asyncpg.connect(postgres.location)
    try:
        await _add(index, [records.make(study=study, series=series)])
        assert await index.announce_stable(NOW, 100) == {TENANT: 2}
        async with conn.transaction():
            await conn.execute(
                "SELECT 1 FROM study WHERE study_instance_uid = $1 FOR UPDATE", study
            )
            adding = asyncio.create_task(_add(index, [records.make(study=study, series=series)]))
            await asyncio.sleep(1.2)
            assert not adding.done()
        await adding
        assert await index.announce_stable(1.0, 100) == {}
    finally:
        await conn.close()
        await index.close()
