"""What an entry's filter is matched on (app/services/entry_attributes.py), on both index
backends: an instance entry its own metadata; a stable series or study the instances
stored in it (so "study.stable, Modality=CT" matches a study with a CT series, which an
entry without instance metadata never did); a deleted one nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from pydicom.uid import generate_uid

from app.dicom.attribute_filter import matches_any
from app.services.entry_attributes import entry_datasets
from app.services.ports import Adding, Change, ChangeAction, ChangeState, Index
from tests.integration.conftest import TENANT
from tests.support.records import Records

CT = (("Modality", "CT"),)


def _change(action: ChangeAction, study: str, series: str | None = None) -> Change:
    return Change(1, action, datetime.now(UTC), study, series, None, ChangeState.CURRENT)


async def test_a_stable_study_is_matched_on_its_stored_instances(
    index: Index, records: Records
) -> None:
    study, mr_series, ct_series = generate_uid(), generate_uid(), generate_uid()
    mr = records.make(study=study, series=mr_series, Modality="MR")
    ct = records.make(study=study, series=ct_series, Modality="CT")
    await index.add_instances([Adding(TENANT, r, overwrite=False) for r in (mr, ct)])

    found = await entry_datasets(index, TENANT, _change(ChangeAction.STUDY_STABLE, study))
    assert len(found) == 2 and matches_any(found, CT)
    series = _change(ChangeAction.SERIES_STABLE, study, mr_series)
    found = await entry_datasets(index, TENANT, series)
    assert len(found) == 1 and not matches_any(found, CT)
    assert found[0]["00080060"] == {"vr": "CS", "Value": ["MR"]}

    # An instance entry: its own metadata, never the index's.
    stored = Change(
        2, ChangeAction.INSTANCE_STORED, datetime.now(UTC), study, ct_series,
        ct.sop_instance_uid, ChangeState.CURRENT, metadata=orjson.dumps(ct.metadata),
    )  # fmt: skip
    assert matches_any(await entry_datasets(index, TENANT, stored), CT)
    gone = Change(
        3, ChangeAction.INSTANCE_STORED, datetime.now(UTC), study, ct_series,
        ct.sop_instance_uid, ChangeState.REPLACED,
    )  # fmt: skip
    assert await entry_datasets(index, TENANT, gone) == []

    # Deleted: nothing to match, so only an empty filter matches.
    deleted = _change(ChangeAction.STUDY_DELETED, study)
    assert await entry_datasets(index, TENANT, deleted) == []
    assert matches_any([], ()) and not matches_any([], CT)
