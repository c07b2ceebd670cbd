"""A write's audit event lives and dies with the write (Index.add_instance(audit=...)), on
SQLite and PostgreSQL: stored, identical, conflicting and replaced instances each keep
their event in the same transaction, and a transaction that fails keeps neither."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import pytest
from pydicom.uid import generate_uid

from app.audit.event import (
    AuditAction,
    AuditEvent,
    AuditProtocol,
    EventActionCode,
    EventOutcome,
)
from app.audit.query import AuditQuery
from app.index import postgres_audit, sqlite_audit
from app.services.audit import audit_outcome
from app.services.ports import Index, InstanceRecord, Outcome
from tests.integration.conftest import TENANT, Backend, Records


def transferred(record: InstanceRecord) -> AuditEvent:
    return AuditEvent(
        AuditAction.INSTANCES_TRANSFERRED,
        AuditProtocol.DICOMWEB,
        tenant=TENANT,
        action_code=EventActionCode.CREATE,
        subject="modality-service",
        client="modality",
        address="10.1.2.3",
        study_instance_uid=record.study_instance_uid,
        sop_instance_uids=(record.sop_instance_uid,),
        patient_id=record.patient_id,
    )


async def trail(index: Index, record: InstanceRecord) -> list[AuditEvent]:
    """The events of the record's study, oldest first (nothing queues: no flush needed)."""
    found = await index.search_audit(TENANT, AuditQuery(study=record.study_instance_uid))
    return sorted(found, key=lambda e: e.when)


def summary(event: AuditEvent | None) -> tuple[object, ...]:
    assert event is not None
    return (
        event.outcome,
        event.effective_action_code,
        event.sop_instance_uids,
        event.patient_id,
        event.subject,
        event.reason,
    )


async def test_each_outcome_keeps_its_event(index: Index, records: Records) -> None:
    sop = generate_uid()
    first = records.make(sop=sop, seed=1, PatientID="PAT-AUDIT")
    assert first.patient_id == "PAT-AUDIT"
    event = transferred(first)
    stored = await index.add_instance(
        TENANT, first, overwrite=False, audit=partial(audit_outcome, event)
    )
    assert stored.outcome is Outcome.STORED
    assert stored.audit == event

    again = replace(first, blob_key="another-key")
    identical = await index.add_instance(
        TENANT, again, overwrite=True, audit=partial(audit_outcome, transferred(again))
    )
    assert identical.outcome is Outcome.IDENTICAL
    assert summary(identical.audit) == (
        EventOutcome.SUCCESS,
        EventActionCode.CREATE,
        (sop,),
        "PAT-AUDIT",
        "modality-service",
        "already stored with the same content",
    )

    other = records.make(sop=sop, study=first.study_instance_uid, seed=2, PatientID="PAT-AUDIT")
    conflict = await index.add_instance(
        TENANT, other, overwrite=False, audit=partial(audit_outcome, transferred(other))
    )
    assert conflict.outcome is Outcome.CONFLICT
    assert conflict.audit is not None
    assert conflict.audit.outcome is EventOutcome.MINOR_FAILURE
    assert "nothing changed" in conflict.audit.reason
    # The conflict changed no data: still the first instance.
    assert [i.sha256 for i in await index.instances(TENANT, first.study_instance_uid)] == [
        first.sha256
    ]

    replaced = await index.add_instance(
        TENANT, other, overwrite=True, audit=partial(audit_outcome, transferred(other))
    )
    assert replaced.outcome is Outcome.REPLACED
    assert replaced.audit is not None
    assert replaced.audit.effective_action_code is EventActionCode.UPDATE

    kept = await trail(index, first)
    assert [summary(e) for e in kept] == [
        summary(stored.audit),
        summary(identical.audit),
        summary(conflict.audit),
        summary(replaced.audit),
    ]


async def test_a_failed_event_write_keeps_no_instance(
    index: Index, backend: Backend, records: Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event is written after the instance, in the same transaction: when the event
    cannot be written the instance is rolled back too."""

    class Refused(Exception):
        pass

    def sqlite_refuses(*args: object) -> None:
        raise Refused

    async def postgres_refuses(*args: object) -> None:
        raise Refused

    if backend.name == "sqlite":
        monkeypatch.setattr(sqlite_audit, "insert_audit_event", sqlite_refuses)
    else:
        monkeypatch.setattr(postgres_audit, "insert_audit_event", postgres_refuses)
    record = records.make(PatientID="PAT-GONE")
    with pytest.raises(Refused):
        await index.add_instance(
            TENANT, record, overwrite=False, audit=partial(audit_outcome, transferred(record))
        )
    monkeypatch.undo()
    assert await index.instances(TENANT, record.study_instance_uid) == []
    assert await trail(index, record) == []
    # The index is still usable, and the same instance stores with its event.
    again = await index.add_instance(
        TENANT, record, overwrite=False, audit=partial(audit_outcome, transferred(record))
    )
    assert again.outcome is Outcome.STORED
    assert [e.patient_id for e in await trail(index, record)] == ["PAT-GONE"]


async def test_without_an_event_nothing_is_kept(index: Index, records: Records) -> None:
    record = records.make()
    added = await index.add_instance(TENANT, record, overwrite=False)
    assert added.audit is None
    assert await trail(index, record) == []


async def test_an_instance_of_another_patient_keeps_a_failure_event(
    index: Index, records: Records
) -> None:
    """Refused, only its event is kept (a minor failure naming the instance's own patient);
    allowed, the stored instance's event says it joined another patient's study."""
    first = records.make(PatientID="PAT-OWNER")
    await index.add_instance(
        TENANT, first, overwrite=False, audit=partial(audit_outcome, transferred(first))
    )
    other = records.make(study=first.study_instance_uid, PatientID="PAT-OTHER")
    refused = await index.add_instance(
        TENANT, other, overwrite=False, audit=partial(audit_outcome, transferred(other))
    )
    assert refused.outcome is Outcome.PATIENT_MISMATCH
    assert refused.audit is not None
    assert refused.audit.outcome is EventOutcome.MINOR_FAILURE
    assert "another patient" in refused.audit.reason
    assert "PAT-OWNER" not in refused.audit.reason
    allowed = await index.add_instance(
        TENANT,
        other,
        overwrite=False,
        audit=partial(audit_outcome, transferred(other)),
        allow_patient_mismatch=True,
    )
    assert allowed.outcome is Outcome.STORED
    assert allowed.patient_mismatch
    assert allowed.audit is not None
    assert allowed.audit.outcome is EventOutcome.SUCCESS
    assert "another patient" in allowed.audit.reason
    kept = await trail(index, first)
    assert [(e.outcome, e.patient_id) for e in kept] == [
        (EventOutcome.SUCCESS, "PAT-OWNER"),
        (EventOutcome.MINOR_FAILURE, "PAT-OTHER"),
        (EventOutcome.SUCCESS, "PAT-OTHER"),
    ]
    assert len(await index.instances(TENANT, first.study_instance_uid)) == 2
