"""Index.add_instances, the group commit's transaction, on both backends: an instance that
fails alone is undone alone; a commit that fails keeps nothing of the batch."""

from __future__ import annotations

import pytest
from pydicom.uid import generate_uid

from app.dicom.levels import NUMBER_OF_STUDY_RELATED_INSTANCES
from app.services.ports import Adding, AddResult, Index, Outcome
from tests.integration.conftest import TENANT, Backend, Records
from tests.integration.test_index_contract import study_row
from tests.support.poison import poison


async def test_a_failing_instance_fails_alone_in_its_batch(
    backend: Backend, index: Index, records: Records
) -> None:
    study = generate_uid()
    batch = [records.make(study=study) for _ in range(3)]
    await poison(backend.name, backend.location, batch[1].sop_instance_uid, at_commit=False)
    results = await index.add_instances([Adding(TENANT, r, overwrite=False) for r in batch])
    assert results[0] == results[2] == AddResult(Outcome.STORED)
    assert isinstance(results[1], Exception) and "poisoned instance" in str(results[1])
    kept = {i.sop_instance_uid for i in await index.instances(TENANT, study)}
    assert kept == {batch[0].sop_instance_uid, batch[2].sop_instance_uid}
    counts = await study_row(index, study)
    assert counts is not None and counts[NUMBER_OF_STUDY_RELATED_INSTANCES] == 2


async def test_a_failed_commit_keeps_nothing_of_the_batch(
    backend: Backend, index: Index, records: Records
) -> None:
    studies = [generate_uid(), generate_uid()]
    batch = [records.make(study=studies[i % 2]) for i in range(4)]
    await poison(backend.name, backend.location, batch[2].sop_instance_uid, at_commit=True)
    with pytest.raises(Exception, match=r"(?i)poisoned|foreign key"):
        await index.add_instances([Adding(TENANT, r, overwrite=False) for r in batch])
    for study in studies:
        assert await index.instances(TENANT, study) == []
        assert await study_row(index, study) is None
    # The index still works: the next batch, without the poisoned one, is kept.
    again = [batch[0], batch[1], batch[3]]
    results = await index.add_instances([Adding(TENANT, r, overwrite=False) for r in again])
    assert results == [AddResult(Outcome.STORED)] * 3
