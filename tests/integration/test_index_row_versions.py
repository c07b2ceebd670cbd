"""Computed attributes stay exact without rewriting the parent rows once per instance.

Storing an instance used to update its series and study rows (the instance counts) and its
patient row (an unconditional upsert): on PostgreSQL each update leaves a dead row version
behind, and a million instances left the study table eleven times its size. Triggers
count the UPDATEs of patient, study and series rows while instances are stored; the counts
and ModalitiesInStudy are checked at every level after stores and replacements.
"""

from __future__ import annotations

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
from app.query.qido import parse_qido
from app.services.ports import Index, Outcome
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
    search of the study (every instance hit carries its series' count)."""
    query = parse_qido([("StudyInstanceUID", study)], level)
    counts: dict[str, int] = {}
    for hit in await index.search(TENANT, query):
        assert hit.series is not None
        uid = hit.series["0020000E"]["Value"][0]
        assert (
            counts.get(uid, hit.computed[NUMBER_OF_SERIES_RELATED_INSTANCES])
            == (hit.computed[NUMBER_OF_SERIES_RELATED_INSTANCES])
        )
        counts[uid] = hit.computed[NUMBER_OF_SERIES_RELATED_INSTANCES]
    return counts


async def test_storing_into_an_existing_series_rewrites_no_parent_row(
    backend: Backend, records: Records
) -> None:
    index = await backend.open()
    try:
        await count_rewrites(backend)
        study, ct, mr = generate_uid(), generate_uid(), generate_uid()
        first = records.make(study=study, series=ct, Modality="CT", seed=0)
        assert (await index.add_instance(TENANT, first, overwrite=False)).outcome is Outcome.STORED
        await rewrites(backend)  # the first instance creates the rows and counts the study

        for n in range(1, 12):
            series, modality = (ct, "CT") if n < 6 else (mr, "MR")
            record = records.make(study=study, series=series, Modality=modality, seed=n)
            assert (await index.add_instance(TENANT, record, overwrite=False)).outcome is (
                Outcome.STORED
            )
        # 11 instances, one of them the first of a new series: the study row changes once
        # (its series count and modalities); before, 11 patient, 11 study, 11 series.
        assert await rewrites(backend) == Counter({"study": 1})

        renamed = records.make(
            study=study, series=mr, Modality="MR", PatientName="OTHER^NAME", seed=12
        )
        await index.add_instance(TENANT, renamed, overwrite=False)
        assert await rewrites(backend) == Counter({"patient": 1})  # its attributes changed

        assert await study_counts(index, study) == {
            MODALITIES_IN_STUDY: ["CT", "MR"],
            NUMBER_OF_STUDY_RELATED_SERIES: 2,
            NUMBER_OF_STUDY_RELATED_INSTANCES: 13,
        }
        for level in (Level.SERIES, Level.INSTANCE):
            assert await series_counts(index, study, level) == {ct: 6, mr: 7}
    finally:
        await index.close()


async def test_counts_and_modalities_follow_replacements_at_every_level(
    index: Index, records: Records
) -> None:
    study, ct, mr = generate_uid(), generate_uid(), generate_uid()
    stored = [records.make(study=study, series=ct, Modality="CT", seed=n) for n in range(3)]
    stored.append(records.make(study=study, series=mr, Modality="MR", seed=3))
    for record in stored:
        await index.add_instance(TENANT, record, overwrite=False)

    # A CT instance again, other bytes, same series: nothing to count differently.
    again = records.make(
        sop=stored[0].sop_instance_uid, study=study, series=ct, Modality="CT", seed=10
    )
    assert (await index.add_instance(TENANT, again, overwrite=True)).outcome is Outcome.REPLACED
    assert await series_counts(index, study, Level.SERIES) == {ct: 3, mr: 1}

    # The only MR instance moves into the CT series: the MR series is emptied and removed.
    moved = records.make(
        sop=stored[3].sop_instance_uid, study=study, series=ct, Modality="CT", seed=11
    )
    assert (await index.add_instance(TENANT, moved, overwrite=True)).outcome is Outcome.REPLACED
    assert await study_counts(index, study) == {
        MODALITIES_IN_STUDY: ["CT"],
        NUMBER_OF_STUDY_RELATED_SERIES: 1,
        NUMBER_OF_STUDY_RELATED_INSTANCES: 4,
    }
    for level in (Level.SERIES, Level.INSTANCE):
        assert await series_counts(index, study, level) == {ct: 4}
    by_modality = parse_qido([("ModalitiesInStudy", "MR")], Level.STUDY)
    assert await index.search(TENANT, by_modality) == []
    by_modality = parse_qido([("ModalitiesInStudy", "CT")], Level.STUDY)
    assert len(await index.search(TENANT, by_modality)) == 1
