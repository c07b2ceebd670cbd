"""Computed attributes stay exact without rewriting the parent rows once per instance.

Storing an instance used to update its series and study rows (the instance counts) and its
patient row (an unconditional upsert): on PostgreSQL each update leaves a dead row version
behind, and a million instances left the study table eleven times its size. Now instance
counts are folded into the parent rows once per FOLD_AT instances and searches count the
rest. Triggers count the UPDATEs of patient, study and series rows while instances are
stored; counts and ModalitiesInStudy are checked at every level after stores (folded and
not), replacements of folded instances, and concurrent stores from two index objects.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter

import asyncpg
from pydicom.uid import generate_uid

from app.dicom.levels import (
    MODALITIES_IN_STUDY,
    NUMBER_OF_SERIES_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_SERIES,
    Level,
)
from app.index.rows import FOLD_AT
from app.query.qido import parse_qido
from app.services.ports import Index, InstanceRecord, Outcome
from tests.integration.conftest import TENANT, Backend, Records

PARENTS = ("patient", "study", "series")

_SQLITE_TRIGGER = """CREATE TRIGGER {0}_rewrite AFTER UPDATE ON {0}
    BEGIN INSERT INTO rewrite (tbl) VALUES ('{0}'); END"""
_POSTGRES_FUNCTION = """CREATE FUNCTION note_rewrite() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN INSERT INTO rewrite (tbl) VALUES (TG_TABLE_NAME); RETURN NULL; END $$"""
_POSTGRES_TRIGGER = """CREATE TRIGGER {0}_rewrite AFTER UPDATE ON {0}
    FOR EACH ROW EXECUTE FUNCTION note_rewrite()"""


async def count_rewrites(backend: Backend) -> None:
    """From now on, record each UPDATE of a patient, study or series row."""
    if backend.name == "sqlite":
        with sqlite3.connect(backend.location) as db:
            db.execute("CREATE TABLE rewrite (tbl TEXT NOT NULL)")
            for table in PARENTS:
                db.execute(_SQLITE_TRIGGER.format(table))
        return
    conn = await asyncpg.connect(backend.location)
    try:
        await conn.execute("CREATE TABLE rewrite (tbl text NOT NULL)")
        await conn.execute(_POSTGRES_FUNCTION)
        for table in PARENTS:
            await conn.execute(_POSTGRES_TRIGGER.format(table))
    finally:
        await conn.close()


async def rewrites(backend: Backend) -> Counter[str]:
    """The UPDATEs recorded since the last call, per table."""
    if backend.name == "sqlite":
        with sqlite3.connect(backend.location) as db:
            found = [row[0] for row in db.execute("SELECT tbl FROM rewrite")]
            db.execute("DELETE FROM rewrite")
        return Counter(found)
    conn = await asyncpg.connect(backend.location)
    try:
        found = [row[0] for row in await conn.fetch("DELETE FROM rewrite RETURNING tbl")]
    finally:
        await conn.close()
    return Counter(found)


async def study_counts(index: Index, study: str) -> dict[int, object]:
    query = parse_qido([("StudyInstanceUID", study)], Level.STUDY)
    [hit] = await index.search(TENANT, query)
    return hit.computed


async def series_counts(index: Index, study: str, level: Level) -> dict[str, int]:
    """NumberOfSeriesRelatedInstances per series, from the hits of a series or instance
    search of the study (every instance hit carries its series' count, and its study's)."""
    query = parse_qido([("StudyInstanceUID", study), ("limit", "1000")], level)
    counts: dict[str, int] = {}
    hits = await index.search(TENANT, query)
    for hit in hits:
        assert hit.series is not None
        uid = hit.series["0020000E"]["Value"][0]
        count = hit.computed[NUMBER_OF_SERIES_RELATED_INSTANCES]
        assert counts.setdefault(uid, count) == count
    if level is Level.INSTANCE:
        assert {hit.computed[NUMBER_OF_STUDY_RELATED_INSTANCES] for hit in hits} == {len(hits)}
    return counts


async def store(index: Index, record: InstanceRecord) -> None:
    assert (await index.add_instance(TENANT, record, overwrite=False)).outcome is Outcome.STORED


async def test_storing_into_an_existing_series_rewrites_no_parent_row_per_instance(
    backend: Backend, records: Records
) -> None:
    index = await backend.open()
    try:
        await count_rewrites(backend)
        study, ct, mr = generate_uid(), generate_uid(), generate_uid()
        await store(index, records.make(study=study, series=ct, Modality="CT", seed=0))
        await rewrites(backend)  # the first instance creates the rows and counts the study

        cts, mrs = 2 * FOLD_AT + 1, 4
        for n in range(1, cts):
            await store(index, records.make(study=study, series=ct, Modality="CT", seed=n))
        for n in range(mrs):
            await store(index, records.make(study=study, series=mr, Modality="MR", seed=n))
        # Before: one patient, study and series row version per instance. Now the study
        # and the CT series fold their counts twice, and the study adds the MR series.
        assert await rewrites(backend) == Counter({"study": 2 + 1, "series": 2})

        renamed = records.make(
            study=study, series=mr, Modality="MR", PatientName="OTHER^NAME", seed=mrs
        )
        await store(index, renamed)
        assert await rewrites(backend) == Counter({"patient": 1})  # its attributes changed

        assert await study_counts(index, study) == {
            MODALITIES_IN_STUDY: ["CT", "MR"],
            NUMBER_OF_STUDY_RELATED_SERIES: 2,
            NUMBER_OF_STUDY_RELATED_INSTANCES: cts + mrs + 1,
        }
        for level in (Level.SERIES, Level.INSTANCE):
            assert await series_counts(index, study, level) == {ct: cts, mr: mrs + 1}
    finally:
        await index.close()


async def test_counts_and_modalities_follow_replacements_of_folded_instances(
    index: Index, records: Records
) -> None:
    study, ct, mr = generate_uid(), generate_uid(), generate_uid()
    stored = [
        records.make(study=study, series=ct, Modality="CT", seed=n) for n in range(FOLD_AT + 2)
    ]
    stored.append(records.make(study=study, series=mr, Modality="MR", seed=0))
    for record in stored:
        await store(index, record)
    cts = FOLD_AT + 2

    # A folded CT instance again, other bytes, same series: the same counts.
    again = records.make(
        sop=stored[0].sop_instance_uid, study=study, series=ct, Modality="CT", seed=1000
    )
    assert (await index.add_instance(TENANT, again, overwrite=True)).outcome is Outcome.REPLACED
    assert await series_counts(index, study, Level.SERIES) == {ct: cts, mr: 1}

    # A folded CT instance moves into the MR series, then the only MR one into the CT
    # series: the MR series keeps one instance, then none is left and it is removed.
    into_mr = records.make(
        sop=stored[1].sop_instance_uid, study=study, series=mr, Modality="MR", seed=1001
    )
    assert (await index.add_instance(TENANT, into_mr, overwrite=True)).outcome is Outcome.REPLACED
    assert await series_counts(index, study, Level.SERIES) == {ct: cts - 1, mr: 2}
    for moved in (stored[-1], into_mr):
        record = records.make(
            sop=moved.sop_instance_uid, study=study, series=ct, Modality="CT", seed=1002
        )
        await index.add_instance(TENANT, record, overwrite=True)
    assert await study_counts(index, study) == {
        MODALITIES_IN_STUDY: ["CT"],
        NUMBER_OF_STUDY_RELATED_SERIES: 1,
        NUMBER_OF_STUDY_RELATED_INSTANCES: cts + 1,
    }
    for level in (Level.SERIES, Level.INSTANCE):
        assert await series_counts(index, study, level) == {ct: cts + 1}
    by_modality = parse_qido([("ModalitiesInStudy", "MR")], Level.STUDY)
    assert await index.search(TENANT, by_modality) == []
    by_modality = parse_qido([("ModalitiesInStudy", "CT")], Level.STUDY)
    assert len(await index.search(TENANT, by_modality)) == 1


async def test_two_nodes_storing_into_one_series_at_once_lose_no_count(
    backend: Backend, records: Records
) -> None:
    """Two index objects ("nodes"), four uploads in flight on each, one study and series:
    the folds of one node must not miss the instances the other committed meanwhile."""
    study, series = generate_uid(), generate_uid()
    made = [records.make(study=study, series=series, seed=n) for n in range(3 * FOLD_AT + 7)]
    nodes = [await backend.open(pool_size=4), await backend.open(pool_size=4)]
    try:
        queue = list(made)

        async def upload(node: Index) -> None:
            while queue:
                await store(node, queue.pop())

        await asyncio.gather(*(upload(node) for node in nodes for _ in range(4)))
        for node in nodes:
            assert (await study_counts(node, study))[NUMBER_OF_STUDY_RELATED_INSTANCES] == len(made)
            for level in (Level.SERIES, Level.INSTANCE):
                assert await series_counts(node, study, level) == {series: len(made)}
    finally:
        for node in nodes:
            await node.close()
