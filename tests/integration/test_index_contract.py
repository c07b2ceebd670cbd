"""The Index contract (app/services/ports.py): writes, outcomes and retrieval, on every backend."""

from __future__ import annotations

from dataclasses import fields, replace
from uuid import uuid4

import orjson
from pydicom.uid import generate_uid

from app.dicom.levels import (
    MODALITIES_IN_STUDY,
    NUMBER_OF_PATIENT_RELATED_STUDIES,
    NUMBER_OF_STUDY_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_SERIES,
    Level,
)
from app.query.qido import parse_qido
from app.services.ports import (
    AddResult,
    Index,
    InstanceRecord,
    Outcome,
    StoredInstance,
    blob_key,
)
from tests.integration.conftest import TENANT, Records


async def add(index: Index, record: InstanceRecord, *, overwrite: bool = False) -> AddResult:
    return await index.add_instance(TENANT, record, overwrite=overwrite)


async def study_row(index: Index, study: str, tenant: str = TENANT) -> dict[int, object] | None:
    """The computed attributes of a study, or None if the index has no such study."""
    hits = await index.search(tenant, parse_qido([("StudyInstanceUID", study)], Level.STUDY))
    return hits[0].computed if hits else None


async def patient_ids(index: Index) -> dict[str, int]:
    hits = await index.search(TENANT, parse_qido([], Level.PATIENT))
    return {
        hit.patient["00100020"]["Value"][0]: hit.computed[NUMBER_OF_PATIENT_RELATED_STUDIES]
        for hit in hits
        if hit.patient
    }


def stored_part(record: InstanceRecord) -> StoredInstance:
    """What instances() should give back for `record`."""
    names = [f.name for f in fields(StoredInstance)]
    return StoredInstance(**{name: getattr(record, name) for name in names})


# -- outcomes --------------------------------------------------------------------------


async def test_stored_identical_and_conflict(index: Index, records: Records) -> None:
    sop = generate_uid()
    first = records.make(sop=sop, seed=1)
    assert await add(index, first) == AddResult(Outcome.STORED)
    # The same bytes again (under a new blob key, as the store service makes them).
    again = replace(first, blob_key="another-key")
    assert await add(index, again) == AddResult(Outcome.IDENTICAL)
    assert await add(index, again, overwrite=True) == AddResult(Outcome.IDENTICAL)
    other = records.make(sop=sop, study=first.study_instance_uid, seed=2)
    assert other.sha256 != first.sha256
    assert await add(index, other) == AddResult(Outcome.CONFLICT)
    assert await index.instances(TENANT, first.study_instance_uid) == [stored_part(first)]
    assert await study_row(index, first.study_instance_uid) == {
        MODALITIES_IN_STUDY: ["CT"],
        NUMBER_OF_STUDY_RELATED_SERIES: 1,
        NUMBER_OF_STUDY_RELATED_INSTANCES: 1,
    }


async def test_overwrite_replaces_and_names_the_orphan_blob(index: Index, records: Records) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    first = records.make(study=study, series=series, sop=sop, seed=1)
    neighbour = records.make(study=study, series=series, InstanceNumber=2)
    await add(index, first)
    await add(index, neighbour)
    second = records.make(study=study, series=series, sop=sop, seed=2)
    result = await add(index, second, overwrite=True)
    assert result == AddResult(Outcome.REPLACED, orphan_blob_key=first.blob_key)
    assert await index.instances(TENANT, study, series, sop) == [stored_part(second)]
    counts = await study_row(index, study)
    assert counts is not None
    assert counts[NUMBER_OF_STUDY_RELATED_INSTANCES] == 2
    assert counts[NUMBER_OF_STUDY_RELATED_SERIES] == 1


async def test_overwrite_into_another_study_updates_and_removes_the_old_rows(
    index: Index, records: Records
) -> None:
    old_study, new_study = generate_uid(), generate_uid()
    moved_ct = records.make(study=old_study, Modality="CT", PatientID="OLD")
    kept_mr = records.make(study=old_study, Modality="MR", PatientID="OLD")
    resident = records.make(study=new_study, Modality="US", PatientID="NEW")
    for record in (moved_ct, kept_mr, resident):
        assert (await add(index, record)).outcome is Outcome.STORED
    assert await patient_ids(index) == {"OLD": 1, "NEW": 1}

    # The CT instance arrives again, now in the other study and series.
    moved = records.make(
        sop=moved_ct.sop_instance_uid, study=new_study, Modality="CT", PatientID="NEW", seed=5
    )
    result = await add(index, moved, overwrite=True)
    assert result == AddResult(Outcome.REPLACED, moved_ct.blob_key)
    assert await study_row(index, old_study) == {
        MODALITIES_IN_STUDY: ["MR"],  # the emptied CT series is gone
        NUMBER_OF_STUDY_RELATED_SERIES: 1,
        NUMBER_OF_STUDY_RELATED_INSTANCES: 1,
    }
    assert await study_row(index, new_study) == {
        MODALITIES_IN_STUDY: ["CT", "US"],
        NUMBER_OF_STUDY_RELATED_SERIES: 2,
        NUMBER_OF_STUDY_RELATED_INSTANCES: 2,
    }
    assert await index.instances(TENANT, old_study, moved_ct.series_instance_uid) == []

    # Moving the last instance empties the old study and its patient: both are removed.
    moved_mr = records.make(
        sop=kept_mr.sop_instance_uid,
        study=new_study,
        series=resident.series_instance_uid,
        Modality="US",
        PatientID="NEW",
        seed=6,
    )
    assert (await add(index, moved_mr, overwrite=True)).outcome is Outcome.REPLACED
    assert await study_row(index, old_study) is None
    assert await index.instances(TENANT, old_study) == []
    assert await patient_ids(index) == {"NEW": 1}
    assert await study_row(index, new_study) == {
        MODALITIES_IN_STUDY: ["CT", "US"],
        NUMBER_OF_STUDY_RELATED_SERIES: 2,
        NUMBER_OF_STUDY_RELATED_INSTANCES: 3,
    }


async def test_replacing_the_only_instance_keeps_one_of_each_row(
    index: Index, records: Records
) -> None:
    first = records.make(seed=1)
    await add(index, first)
    second = records.make(
        sop=first.sop_instance_uid,
        study=first.study_instance_uid,
        series=first.series_instance_uid,
        seed=2,
    )
    assert (await add(index, second, overwrite=True)).outcome is Outcome.REPLACED
    assert await index.instances(TENANT, first.study_instance_uid) == [stored_part(second)]
    assert await patient_ids(index) == {"TEST-ID": 1}


async def test_patient_counts_studies(index: Index, records: Records) -> None:
    study = generate_uid()
    for record in (
        records.make(study=study, PatientID="P"),
        records.make(study=study, PatientID="P"),
        records.make(PatientID="P"),
        records.make(PatientID="Q"),
    ):
        await add(index, record)
    assert await patient_ids(index) == {"P": 2, "Q": 1}


# -- retrieval -------------------------------------------------------------------------


async def test_instances_and_metadata_scope_and_order(index: Index, records: Records) -> None:
    study, second, first = generate_uid(), generate_uid(), generate_uid()
    other_study = records.make()
    # Added out of order: retrieval sorts by series number, then instance number
    # (missing numbers first, as SQLite sorts NULL), then by arrival.
    added = [
        records.make(study=study, series=second, SeriesNumber=2, InstanceNumber=1),
        records.make(study=study, series=first, SeriesNumber=1, InstanceNumber=3),
        records.make(study=study, series=first, SeriesNumber=1, InstanceNumber=1),
        records.make(study=study, series=first, SeriesNumber=1, InstanceNumber=2),
        records.make(study=study, series=first, SeriesNumber=1, InstanceNumber=2),
        records.make(study=study, series=first, SeriesNumber=1, InstanceNumber=None),
    ]
    for record in [other_study, *added]:
        await add(index, record)
    expected = [added[5], added[2], added[3], added[4], added[1], added[0]]
    assert await index.instances(TENANT, study) == [stored_part(r) for r in expected]
    in_series = await index.instances(TENANT, study, first)
    assert in_series == [stored_part(r) for r in expected[:5]]
    one = added[3]
    assert await index.instances(TENANT, study, first, one.sop_instance_uid) == [stored_part(one)]
    assert await index.instances(TENANT, study, second, one.sop_instance_uid) == []
    assert await index.instances(TENANT, generate_uid()) == []

    metadata = await index.metadata(TENANT, study)
    assert [m.sop_instance_uid for m in metadata] == [r.sop_instance_uid for r in expected]
    assert {(m.study_instance_uid, m.series_instance_uid) for m in metadata} == {
        (study, first),
        (study, second),
    }
    assert [m.sop_instance_uid for m in await index.metadata(TENANT, study, second)] == [
        added[0].sop_instance_uid
    ]
    assert await index.metadata(TENANT, study, first, added[0].sop_instance_uid) == []


async def test_metadata_is_the_stored_json_with_tags_in_order(
    index: Index, records: Records
) -> None:
    record = records.make(
        ImageComments="café ☃",
        ReferencedImageSequence=[],
        ReferringPhysicianName="Müller^Jörg=ミュラー^ヨルグ",
        SpecificCharacterSet=["ISO_IR 192"],
        SliceThickness="0.00001",
        WindowCenter=["40", "1e-5"],
    )
    await add(index, record)
    (found,) = await index.metadata(TENANT, record.study_instance_uid)
    parsed = orjson.loads(found.json)
    assert parsed == record.metadata
    assert list(parsed) == sorted(parsed), "top-level tags are not in tag order"
    pixel = parsed["7FE00010"]
    assert pixel["BulkDataURI"].endswith("/bulkdata/7FE00010")


async def test_frames_and_bulk_data_round_trip(index: Index, records: Records) -> None:
    record = records.make(frames=3, rows=4, columns=4, LargestImagePixelValue=10)
    assert record.bulk and len(record.frames) == 3
    await add(index, record)
    (found,) = await index.instances(TENANT, record.study_instance_uid)
    assert found == stored_part(record)
    assert found.frames == record.frames
    assert found.bulk == record.bulk
    assert found.encapsulated is False


async def test_a_nul_character_in_a_value_does_not_fail_ingest(
    index: Index, records: Records
) -> None:
    # Some modalities pad or corrupt text with NUL, which PostgreSQL text cannot hold.
    record = records.make(StudyDescription="BRAIN\x00MRI", ImageComments="a\x00b")
    assert (await add(index, record)).outcome is Outcome.STORED
    hits = await index.search(TENANT, parse_qido([("StudyDescription", "BRAIN*")], Level.STUDY))
    assert len(hits) == 1
    (found,) = await index.metadata(TENANT, record.study_instance_uid)
    comments = orjson.loads(found.json)["00204000"]["Value"][0]
    assert comments in ("a\x00b", "ab")


# -- tenants ---------------------------------------------------------------------------

OTHER_TENANT = "clinic-b"


async def descriptions(index: Index, tenant: str, level: Level) -> list[str]:
    hits = await index.search(tenant, parse_qido([("includefield", "all")], level))
    key = "0008103E" if level is Level.SERIES else "00081030"
    return [
        attrs[key]["Value"][0]
        for hit in hits
        if (attrs := hit.series if level is Level.SERIES else hit.study)
    ]


async def test_two_tenants_hold_the_same_uids_as_different_objects(
    index: Index, records: Records
) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    uids = {"study": study, "series": series, "sop": sop, "PatientID": "P"}
    ours = records.make(**uids, StudyDescription="ours", SeriesDescription="ours", seed=1)
    theirs = records.make(**uids, StudyDescription="theirs", SeriesDescription="theirs", seed=2)
    assert ours.sha256 != theirs.sha256
    assert await index.add_instance(TENANT, ours, overwrite=False) == AddResult(Outcome.STORED)
    # Not a conflict with the other tenant's instance: an object of its own.
    assert await index.add_instance(OTHER_TENANT, theirs, overwrite=False) == AddResult(
        Outcome.STORED
    )
    assert await index.add_instance(TENANT, theirs, overwrite=False) == AddResult(Outcome.CONFLICT)
    assert await index.add_instance(OTHER_TENANT, theirs, overwrite=False) == AddResult(
        Outcome.IDENTICAL
    )

    for tenant, record in ((TENANT, ours), (OTHER_TENANT, theirs)):
        assert await index.instances(tenant, study) == [stored_part(record)]
        assert await index.instances(tenant, study, series, sop) == [stored_part(record)]
        (found,) = await index.metadata(tenant, study, series)
        assert orjson.loads(found.json) == record.metadata
        name = "ours" if record is ours else "theirs"
        for level in (Level.STUDY, Level.SERIES, Level.INSTANCE):
            assert await descriptions(index, tenant, level) == [name], (tenant, level)
        patients = await index.search(tenant, parse_qido([], Level.PATIENT))
        assert [hit.computed[NUMBER_OF_PATIENT_RELATED_STUDIES] for hit in patients] == [1]
        row = await study_row(index, study, tenant)
        assert row is not None and row[NUMBER_OF_STUDY_RELATED_INSTANCES] == 1
    assert await index.instances("clinic-c", study) == []
    assert await index.metadata("clinic-c", study) == []
    assert await index.search("clinic-c", parse_qido([], Level.PATIENT)) == []

    # Replacing one tenant's instance leaves the other's alone.
    again = records.make(**uids, StudyDescription="ours, again", seed=3)
    result = await index.add_instance(TENANT, again, overwrite=True)
    assert result == AddResult(Outcome.REPLACED, orphan_blob_key=ours.blob_key)
    assert await index.instances(OTHER_TENANT, study) == [stored_part(theirs)]
    assert await descriptions(index, OTHER_TENANT, Level.STUDY) == ["theirs"]


# -- patient consistency -----------------------------------------------------------------


async def test_an_instance_of_another_patient_is_refused_from_the_study(
    index: Index, records: Records
) -> None:
    # It was stored with 200: the study then held two patients' images.
    study = generate_uid()
    first = records.make(study=study, PatientID="PAT-A")
    assert await add(index, first) == AddResult(Outcome.STORED)
    other_id = records.make(study=study, PatientID="PAT-B")
    assert await add(index, other_id) == AddResult(Outcome.PATIENT_MISMATCH)
    other_issuer = records.make(study=study, PatientID="PAT-A", IssuerOfPatientID="ELSEWHERE")
    assert await add(index, other_issuer) == AddResult(Outcome.PATIENT_MISMATCH)
    # Nothing changed: no instance, and no patient row for the refused one either.
    assert await index.instances(TENANT, study) == [stored_part(first)]
    assert await patient_ids(index) == {"PAT-A": 1}
    same = records.make(study=study, PatientID="PAT-A")
    assert await add(index, same) == AddResult(Outcome.STORED)
    # Another tenant's study with the same UID is another study.
    assert await index.add_instance("clinic-b", other_id, overwrite=False) == AddResult(
        Outcome.STORED
    )


async def test_an_instance_of_another_patient_can_be_allowed_into_the_study(
    index: Index, records: Records
) -> None:
    study = generate_uid()
    first = records.make(study=study, PatientID="PAT-A")
    await add(index, first)
    other = records.make(study=study, PatientID="PAT-B")
    added = await index.add_instance(TENANT, other, overwrite=False, allow_patient_mismatch=True)
    assert added == AddResult(Outcome.STORED, patient_mismatch=True)
    assert len(await index.instances(TENANT, study)) == 2
    # The study keeps its patient.
    hits = await index.search(TENANT, parse_qido([("PatientID", "PAT-A")], Level.STUDY))
    assert [hit.computed[NUMBER_OF_STUDY_RELATED_INSTANCES] for hit in hits] == [2]
    same = records.make(study=study, PatientID="PAT-A")
    assert await index.add_instance(
        TENANT, same, overwrite=False, allow_patient_mismatch=True
    ) == AddResult(Outcome.STORED)


async def test_a_refused_overwrite_of_another_patient_keeps_the_stored_instance(
    index: Index, records: Records
) -> None:
    study, sop = generate_uid(), generate_uid()
    first = records.make(study=study, sop=sop, PatientID="PAT-A", seed=1)
    neighbour = records.make(study=study, PatientID="PAT-A")
    await add(index, first)
    await add(index, neighbour)
    # The replacement would remove the stored instance before joining the study: undone.
    changed = records.make(study=study, sop=sop, PatientID="PAT-B", seed=2)
    assert await add(index, changed, overwrite=True) == AddResult(Outcome.PATIENT_MISMATCH)
    assert sorted(i.sha256 for i in await index.instances(TENANT, study)) == sorted(
        [first.sha256, neighbour.sha256]
    )
    assert await patient_ids(index) == {"PAT-A": 1}
    # Correcting the patient of a study's only instance replaces the study's patient.
    lone_study, lone_sop = generate_uid(), generate_uid()
    await add(index, records.make(study=lone_study, sop=lone_sop, PatientID="PAT-C", seed=1))
    corrected = records.make(study=lone_study, sop=lone_sop, PatientID="PAT-D", seed=2)
    result = await add(index, corrected, overwrite=True)
    assert result.outcome is Outcome.REPLACED
    assert not result.patient_mismatch


# -- blob keys (the orphan sweep) ------------------------------------------------------


async def test_referenced_blob_keys_of_every_tenant(index: Index, records: Records) -> None:
    """Of the keys asked, exactly those an instance row names, whatever its tenant; asked
    in one call larger than one SQLite statement's parameters."""
    mine, theirs = blob_key(TENANT, uuid4().hex), blob_key("other", uuid4().hex)
    legacy = uuid4().hex  # keys from before tenants: a bare id
    for tenant, key in ((TENANT, mine), ("other", theirs), (TENANT, legacy)):
        await index.add_instance(tenant, replace(records.make(), blob_key=key), overwrite=False)
    unknown = [blob_key(TENANT, uuid4().hex) for _ in range(2000)]
    asked = [*unknown[:1000], theirs, *unknown[1000:], mine, legacy]
    assert await index.referenced_blob_keys(asked) == {mine, theirs, legacy}
    assert await index.referenced_blob_keys(unknown) == set()
    assert await index.referenced_blob_keys([]) == set()


async def test_replaced_blob_key_is_no_longer_referenced(index: Index, records: Records) -> None:
    first = records.make(seed=1)
    second = records.make(
        seed=2,
        study=first.study_instance_uid,
        series=first.series_instance_uid,
        sop=first.sop_instance_uid,
    )
    await add(index, first)
    await add(index, second, overwrite=True)
    keys = [first.blob_key, second.blob_key]
    assert await index.referenced_blob_keys(keys) == {second.blob_key}
