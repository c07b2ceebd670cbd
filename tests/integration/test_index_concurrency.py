"""Concurrent ingest through two index objects on one database: two server "nodes".

Many uploads of instances of the same new patients, studies and series arrive at once.
Each row must be created once, the computed attributes must be exact, nothing may
deadlock, and every acknowledged instance must be there afterwards.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, replace

import pytest
from pydicom.uid import generate_uid

from app.dicom.levels import (
    MODALITIES_IN_STUDY,
    NUMBER_OF_PATIENT_RELATED_STUDIES,
    NUMBER_OF_SERIES_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_SERIES,
    Level,
)
from app.query.qido import parse_qido
from app.services.ports import Adding, AddResult, Index, InstanceRecord, Outcome
from tests.integration.conftest import TENANT, Backend, Records

MODALITIES = ["CT", "MR", "US", "CR"]
PATIENT_OF_STUDY = ["PA", "PA", "PB"]  # two studies of one patient
PER_SERIES = 15  # 3 studies x 4 series x 15 = 180 distinct instances


@dataclass(frozen=True)
class Place:
    study: str
    series: str
    modality: str
    patient: str


@dataclass
class Workload:
    studies: list[str]
    series: list[list[str]]  # [study][series index]
    originals: list[InstanceRecord]
    identical: list[InstanceRecord]  # the same bytes again
    conflicting: list[InstanceRecord]  # other bytes under a stored SOP Instance UID


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Workload:
    records = Records(tmp_path_factory.mktemp("concurrency"))
    studies = [generate_uid() for _ in PATIENT_OF_STUDY]
    series = [[generate_uid() for _ in MODALITIES] for _ in studies]
    originals = []
    for number in range(PER_SERIES):
        for s, study in enumerate(studies):
            for m, modality in enumerate(MODALITIES):
                originals.append(
                    records.make(
                        study=study,
                        series=series[s][m],
                        Modality=modality,
                        PatientID=PATIENT_OF_STUDY[s],
                        InstanceNumber=number,
                        seed=number,
                    )
                )
    identical = [replace(r, blob_key=f"again-{r.blob_key}") for r in originals[:10]]
    conflicting = [
        records.make(
            study=r.study_instance_uid,
            series=r.series_instance_uid,
            sop=r.sop_instance_uid,
            Modality=r.metadata["00080060"]["Value"][0],
            PatientID=r.metadata["00100020"]["Value"][0],
            seed=1000 + i,
        )
        for i, r in enumerate(originals[-10:])
    ]
    return Workload(studies, series, originals, identical, conflicting)


async def add_all(nodes: list[Index], calls: list[tuple[InstanceRecord, bool]]) -> list[AddResult]:
    """Every call at once, alternating between the nodes."""
    return await asyncio.gather(
        *(
            nodes[i % len(nodes)].add_instance(TENANT, record, overwrite=overwrite)
            for i, (record, overwrite) in enumerate(calls)
        )
    )


async def add_in_batches(
    nodes: list[Index], calls: list[tuple[InstanceRecord, bool]], size: int
) -> list[AddResult]:
    """Every call at once in batches of `size` (group commits), alternating between the
    nodes; the results in the order of `calls`."""
    batches = [calls[start : start + size] for start in range(0, len(calls), size)]
    answers = await asyncio.gather(
        *(
            nodes[i % len(nodes)].add_instances(
                [Adding(TENANT, record, overwrite) for record, overwrite in batch]
            )
            for i, batch in enumerate(batches)
        )
    )
    results = [result for answer in answers for result in answer]
    failed = [r for r in results if not isinstance(r, AddResult)]
    assert not failed, failed
    return [r for r in results if isinstance(r, AddResult)]


async def check_index(index: Index, placed: dict[str, tuple[Place, InstanceRecord]]) -> None:
    """The rows and computed attributes of `index` are exactly those of `placed`."""
    by_study: dict[str, list[Place]] = defaultdict(list)
    for place, _ in placed.values():
        by_study[place.study].append(place)
    every = [("limit", "1000")]

    studies = await index.search(TENANT, parse_qido(every, Level.STUDY))
    found = {hit.study["0020000D"]["Value"][0]: hit.computed for hit in studies if hit.study}
    assert len(found) == len(studies), "a study row is duplicated"
    assert found == {
        study: {
            MODALITIES_IN_STUDY: sorted({p.modality for p in places}),
            NUMBER_OF_STUDY_RELATED_SERIES: len({p.series for p in places}),
            NUMBER_OF_STUDY_RELATED_INSTANCES: len(places),
        }
        for study, places in by_study.items()
    }

    series = await index.search(TENANT, parse_qido(every, Level.SERIES))
    counts = {
        hit.series["0020000E"]["Value"][0]: hit.computed[NUMBER_OF_SERIES_RELATED_INSTANCES]
        for hit in series
        if hit.series
    }
    assert len(counts) == len(series), "a series row is duplicated"
    assert counts == Counter(place.series for place, _ in placed.values())

    patients = await index.search(TENANT, parse_qido(every, Level.PATIENT))
    studies_of = {
        hit.patient["00100020"]["Value"][0]: hit.computed[NUMBER_OF_PATIENT_RELATED_STUDIES]
        for hit in patients
        if hit.patient
    }
    assert len(studies_of) == len(patients), "a patient row is duplicated"
    expected_patients: dict[str, set[str]] = defaultdict(set)
    for place, _ in placed.values():
        expected_patients[place.patient].add(place.study)
    assert studies_of == {patient: len(s) for patient, s in expected_patients.items()}

    for study in by_study:
        stored = {i.sop_instance_uid: i.blob_key for i in await index.instances(TENANT, study)}
        assert stored == {
            sop: record.blob_key for sop, (place, record) in placed.items() if place.study == study
        }


def place_of(record: InstanceRecord) -> Place:
    meta = record.metadata
    return Place(
        record.study_instance_uid,
        record.series_instance_uid,
        meta["00080060"]["Value"][0],
        meta["00100020"]["Value"][0],
    )


@pytest.mark.parametrize("batch", [1, 8], ids=["single", "batches"])
async def test_concurrent_uploads_from_two_nodes(
    backend: Backend, workload: Workload, batch: int
) -> None:
    """One by one, and in group commits of 8 whose instances share studies with the
    other node's batches (whose row locks they wait for, or deadlock and retry)."""
    nodes = [await backend.open(), await backend.open()]
    try:
        calls = [(r, False) for r in workload.originals + workload.identical + workload.conflicting]
        assert len(calls) == 200
        random.Random(7).shuffle(calls)
        if batch == 1:
            results = await add_all(nodes, calls)
        else:
            results = await add_in_batches(nodes, calls, batch)

        outcomes = Counter(result.outcome for result in results)
        assert outcomes == {Outcome.STORED: 180, Outcome.IDENTICAL: 10, Outcome.CONFLICT: 10}
        assert all(result.orphan_blob_key is None for result in results)
        # Of two different objects with one SOP Instance UID, the first one in is kept.
        placed = {
            record.sop_instance_uid: (place_of(record), record)
            for (record, _), result in zip(calls, results, strict=True)
            if result.outcome is Outcome.STORED
        }
        assert len(placed) == 180
        for node in nodes:
            await check_index(node, placed)
    finally:
        for node in nodes:
            await node.close()


async def test_concurrent_overwrites_across_studies(
    backend: Backend, workload: Workload, records: Records
) -> None:
    """Instances moved between two studies in both directions at once: the writers lock
    the same rows in opposite orders, which the index must survive (retry on deadlock)."""
    nodes = [await backend.open(), await backend.open()]
    try:
        # Studies 1 and 2 belong to different patients: a move locks the rows of one
        # patient, study and series, then those of the other.
        first = [r for r in workload.originals if r.study_instance_uid in workload.studies[1:]]
        await add_all(nodes, [(r, False) for r in first])
        placed = {r.sop_instance_uid: (place_of(r), r) for r in first}

        moves = []
        for record in first[:48]:
            s = workload.studies.index(record.study_instance_uid)
            m = MODALITIES.index(place_of(record).modality)
            target = 3 - s  # study 1 -> 2 and 2 -> 1
            moves.append(
                records.make(
                    study=workload.studies[target],
                    series=workload.series[target][m],
                    sop=record.sop_instance_uid,
                    Modality=MODALITIES[m],
                    PatientID=PATIENT_OF_STUDY[target],
                    seed=2000,
                )
            )
        results = await add_all(nodes, [(r, True) for r in moves])

        assert [r.outcome for r in results] == [Outcome.REPLACED] * len(moves)
        assert [r.orphan_blob_key for r in results] == [r.blob_key for r in first[:48]]
        placed.update({r.sop_instance_uid: (place_of(r), r) for r in moves})
        for node in nodes:
            await check_index(node, placed)
    finally:
        for node in nodes:
            await node.close()


async def test_concurrent_first_instances_of_two_patients_never_mix_in_one_study(
    backend: Backend, records: Records
) -> None:
    """Instances of one new study but two patients arrive at once on two nodes: whoever
    creates the study decides its patient, and every instance of the other is refused."""
    study = generate_uid()
    calls = [(records.make(study=study, PatientID=f"PAT-{i % 2}"), False) for i in range(20)]
    nodes = [await backend.open(), await backend.open()]
    try:
        results = await add_all(nodes, calls)
        stored = {
            record.metadata["00100020"]["Value"][0]
            for (record, _), result in zip(calls, results, strict=True)
            if result.outcome is Outcome.STORED
        }
        assert len(stored) == 1, stored
        assert Counter(result.outcome for result in results) == {
            Outcome.STORED: 10,
            Outcome.PATIENT_MISMATCH: 10,
        }
        hits = await nodes[0].search(TENANT, parse_qido([], Level.PATIENT))
        assert [
            (hit.patient["00100020"]["Value"][0], hit.computed[NUMBER_OF_PATIENT_RELATED_STUDIES])
            for hit in hits
            if hit.patient
        ] == [(stored.pop(), 1)]
        assert len(await nodes[1].instances(TENANT, study)) == 10
    finally:
        for node in nodes:
            await node.close()
