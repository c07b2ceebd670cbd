"""`Index.delete` on both backends: rows, computed attributes, change-log entries, audit
events and blob-deletion records in one transaction, tenant by tenant, and concurrent
stores into the study being deleted leave exact counts."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pydicom.uid import generate_uid

from app.audit.event import AuditAction, AuditEvent, AuditProtocol
from app.audit.query import AuditQuery
from app.dicom.levels import (
    MODALITIES_IN_STUDY,
    NUMBER_OF_PATIENT_RELATED_STUDIES,
    NUMBER_OF_SERIES_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_SERIES,
    Level,
)
from app.index.rows import FOLD_AT
from app.query.qido import parse_qido
from app.services.ports import (
    Adding,
    ChangeAction,
    ChangeState,
    Index,
    InstanceRecord,
    StoredInstance,
)
from tests.integration.conftest import TENANT, Backend
from tests.support.records import Records

OTHER = "clinic-b"


async def _study(index: Index, study: str) -> dict[int, object] | None:
    hits = await index.search(TENANT, parse_qido([("StudyInstanceUID", study)], Level.STUDY))
    return hits[0].computed if hits else None


async def _series_count(index: Index, study: str, series: str) -> int | None:
    query = parse_qido([("StudyInstanceUID", study), ("SeriesInstanceUID", series)], Level.SERIES)
    found = await index.search(TENANT, query)
    return int(found[0].computed[NUMBER_OF_SERIES_RELATED_INSTANCES]) if found else None


async def _patients(index: Index) -> dict[str, int]:
    hits = await index.search(TENANT, parse_qido([], Level.PATIENT))
    return {
        h.patient["00100020"]["Value"][0]: h.computed[NUMBER_OF_PATIENT_RELATED_STUDIES]
        for h in hits
        if h.patient
    }


async def _add_all(index: Index, records: Sequence[InstanceRecord], tenant: str = TENANT) -> None:
    results = await index.add_instances([Adding(tenant, r, overwrite=False) for r in records])
    assert not [r for r in results if isinstance(r, Exception)]


def _audit(found: Sequence[StoredInstance]) -> list[AuditEvent]:
    return [
        AuditEvent(
            AuditAction.INSTANCES_ACCESSED,
            AuditProtocol.DICOMWEB,
            tenant=TENANT,
            study_instance_uid=found[0].study_instance_uid,
            sop_instance_uids=tuple(i.sop_instance_uid for i in found),
        )
    ]


async def test_delete_keeps_computed_attributes_exact_and_drops_emptied_parents(
    index: Index, records: Records
) -> None:
    study, other_study = generate_uid(), generate_uid()
    ct, mr = generate_uid(), generate_uid()
    # More than FOLD_AT instances: some are counted in the stored count, some are not.
    cts = [records.make(study=study, series=ct, InstanceNumber=n) for n in range(FOLD_AT + 2)]
    mrs = [records.make(study=study, series=mr, Modality="MR")]
    kept = [records.make(study=other_study)]
    for record in [*cts, *mrs, *kept]:  # one by one: the folding happens as in production
        await _add_all(index, [record])
    assert (await _study(index, study) or {})[NUMBER_OF_STUDY_RELATED_INSTANCES] == FOLD_AT + 3

    # The first instance (folded into the stored counts) and the last (not yet folded).
    for record in (cts[0], cts[-1]):
        done = await index.delete(TENANT, study, ct, record.sop_instance_uid)
        assert [i.sop_instance_uid for i in done.instances] == [record.sop_instance_uid]
    computed = await _study(index, study) or {}
    assert computed[NUMBER_OF_STUDY_RELATED_INSTANCES] == FOLD_AT + 1
    assert computed[NUMBER_OF_STUDY_RELATED_SERIES] == 2
    assert await _series_count(index, study, ct) == FOLD_AT

    done = await index.delete(TENANT, study, mr, audit=_audit)
    assert [i.blob_key for i in done.instances] == [mrs[0].blob_key]
    assert [e.sop_instance_uids for e in done.audit] == [(mrs[0].sop_instance_uid,)]
    computed = await _study(index, study) or {}
    assert computed[NUMBER_OF_STUDY_RELATED_SERIES] == 1
    assert computed[MODALITIES_IN_STUDY] == ["CT"]
    assert computed[NUMBER_OF_STUDY_RELATED_INSTANCES] == FOLD_AT
    assert await _series_count(index, study, mr) is None
    assert await _patients(index) == {"TEST-ID": 2}

    done = await index.delete(TENANT, study)
    assert len(done.instances) == FOLD_AT
    assert await _study(index, study) is None
    assert await index.instances(TENANT, study) == []
    assert await index.metadata(TENANT, study) == []
    assert await _patients(index) == {"TEST-ID": 1}
    await index.delete(TENANT, other_study)
    assert await _patients(index) == {}

    # The audit event was kept with the delete.
    trail = await index.search_audit(TENANT, AuditQuery())
    assert [e.sop_instance_uids for e in trail] == [(mrs[0].sop_instance_uid,)]


async def test_delete_logs_each_instance_then_whole_series_and_study(
    index: Index, records: Records
) -> None:
    study, series = generate_uid(), generate_uid()
    a, b = records.make(study=study, series=series), records.make(study=study, series=series)
    c = records.make(study=study)
    await _add_all(index, [a, b, c])
    await index.delete(TENANT, study, series, a.sop_instance_uid)
    await index.delete(TENANT, study)

    changes = await index.changes(TENANT, 3, 10)
    summary = [(c.action, c.series_instance_uid, c.sop_instance_uid, c.state) for c in changes]
    gone = ChangeState.DELETED
    assert summary[0] == (ChangeAction.INSTANCE_DELETED, series, a.sop_instance_uid, gone)
    # The study's delete: its instances in retrieval order, then the series, then the study.
    assert sorted(summary[1:3], key=str) == sorted(
        [
            (ChangeAction.INSTANCE_DELETED, series, b.sop_instance_uid, gone),
            (ChangeAction.INSTANCE_DELETED, c.series_instance_uid, c.sop_instance_uid, gone),
        ],
        key=str,
    )
    assert sorted(summary[3:5], key=str) == sorted(
        [
            (ChangeAction.SERIES_DELETED, series, None, gone),
            (ChangeAction.SERIES_DELETED, c.series_instance_uid, None, gone),
        ],
        key=str,
    )
    assert summary[5:] == [(ChangeAction.STUDY_DELETED, None, None, gone)]
    assert [c.sequence for c in changes] == list(range(4, 10))
    assert all(c.study_instance_uid == study for c in changes)
    # What was stored before is now shown deleted too.
    assert {c.state for c in await index.changes(TENANT, 0, 3)} == {gone}


async def test_nothing_to_delete_writes_nothing(index: Index, records: Records) -> None:
    record = records.make()
    await _add_all(index, [record])
    study, series = record.study_instance_uid, record.series_instance_uid
    assert (await index.delete(TENANT, generate_uid())).instances == ()
    assert (await index.delete(TENANT, study, generate_uid())).instances == ()
    assert (await index.delete(TENANT, study, series, generate_uid())).instances == ()
    # The same UIDs in another tenant are another object: not this one.
    assert (await index.delete(OTHER, study)).instances == ()
    assert len(await index.instances(TENANT, study)) == 1
    assert len(await index.changes(TENANT, 0, 10)) == 1
    assert await index.changes(OTHER, 0, 10) == []
    assert await index.blobs_to_delete(10) == []
    # Deleting twice: the second finds nothing.
    assert len((await index.delete(TENANT, study)).instances) == 1
    assert (await index.delete(TENANT, study)).instances == ()


async def test_blobs_of_a_delete_stay_recorded_and_known_until_confirmed(
    index: Index, records: Records
) -> None:
    study = generate_uid()
    mine = [records.make(study=study) for _ in range(3)]
    theirs = records.make(study=study)
    await _add_all(index, mine)
    await _add_all(index, [theirs], tenant=OTHER)
    keys = sorted(r.blob_key for r in mine)
    await index.delete(TENANT, study)
    # Recorded in the delete's transaction, and known to the orphan sweep meanwhile.
    assert sorted(await index.blobs_to_delete(10)) == keys
    assert len(await index.blobs_to_delete(2)) == 2
    assert await index.referenced_blob_keys([*keys, "unknown"]) == set(keys)
    await index.blobs_deleted(keys[:2])
    assert await index.blobs_to_delete(10) == keys[2:]
    await index.blobs_deleted(keys[2:])
    assert await index.blobs_to_delete(10) == []
    assert await index.referenced_blob_keys(keys) == set()
    # The other tenant's study is untouched.
    assert len(await index.instances(OTHER, study)) == 1


async def test_stores_into_a_study_being_deleted_leave_exact_counts(
    backend: Backend, records: Records
) -> None:
    """Two index objects ("nodes"): one stores batches into one study, the other deletes
    series and the study meanwhile; nothing deadlocks or fails, and afterwards the study's
    counts are those of its instances, and the change log adds up to what is stored."""
    study = generate_uid()
    series = [generate_uid() for _ in range(3)]
    writer, deleter = await backend.open(), await backend.open()
    try:
        batches = [
            [records.make(study=study, series=series[(n + k) % 3]) for k in range(5)]
            for n in range(12)
        ]

        async def store() -> None:
            for batch in batches:
                await _add_all(writer, batch)

        async def delete() -> None:
            for n in range(8):
                await asyncio.sleep(0.01)
                if n % 3 == 2:
                    await deleter.delete(TENANT, study)
                else:
                    await deleter.delete(TENANT, study, series[n % 3])

        await asyncio.wait_for(asyncio.gather(store(), delete()), 120)
        stored = await writer.instances(TENANT, study)
        computed = await _study(writer, study)
        if stored:
            assert computed is not None
            assert computed[NUMBER_OF_STUDY_RELATED_INSTANCES] == len(stored)
            assert computed[NUMBER_OF_STUDY_RELATED_SERIES] == len(
                {i.series_instance_uid for i in stored}
            )
            for uid in {i.series_instance_uid for i in stored}:
                in_series = [i for i in stored if i.series_instance_uid == uid]
                assert await _series_count(writer, study, uid) == len(in_series)
        else:
            assert computed is None
        changes = await writer.changes(TENANT, 0, 1000)
        added = sum(c.action == ChangeAction.INSTANCE_STORED for c in changes)
        removed = sum(c.action == ChangeAction.INSTANCE_DELETED for c in changes)
        assert added == 60
        assert added - removed == len(stored)
        assert [c.sequence for c in changes] == list(range(1, len(changes) + 1))
    finally:
        await writer.close()
        await deleter.close()


async def test_readers_see_a_study_whole_or_not_at_all_while_it_is_deleted(
    backend: Backend, records: Records
) -> None:
    """A reader on another index object polls the study while it is deleted: every answer
    is the whole study or nothing, never part of it."""
    study = generate_uid()
    count = FOLD_AT + 8
    deleter, reader = await backend.open(), await backend.open()
    try:
        series = [generate_uid() for _ in range(4)]
        batch = [
            records.make(study=study, series=series[n % 4], InstanceNumber=n) for n in range(count)
        ]
        await _add_all(deleter, batch)
        seen: set[tuple[int, object]] = set()
        done = asyncio.Event()

        async def read() -> None:
            while not done.is_set():
                instances = len(await reader.instances(TENANT, study))
                computed = await _study(reader, study)
                counted = computed[NUMBER_OF_STUDY_RELATED_INSTANCES] if computed else None
                seen.add((instances, counted))
                await asyncio.sleep(0)

        async def delete() -> None:
            await asyncio.sleep(0.02)
            try:
                await deleter.delete(TENANT, study)
            finally:
                done.set()

        await asyncio.wait_for(asyncio.gather(read(), delete()), 60)
        # The two reads are two statements: the delete may commit between them.
        assert seen <= {(count, count), (count, None), (0, None)}, seen
        assert (count, count) in seen
        assert await reader.instances(TENANT, study) == []
    finally:
        await deleter.close()
        await reader.close()
