"""Reads are audited one event per study (PS3.15 A.5.3): `per_study` splits what a request
returned by study and names each study's series, instances, SOP classes and patient."""

from __future__ import annotations

from app.audit.event import AuditAction, AuditEvent, AuditProtocol
from app.services.audit import per_study
from app.services.ports import StoredInstance, StoredMetadata

CT, MR = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"


def instance(study: str, series: str, sop: str, sop_class: str = CT) -> StoredInstance:
    return StoredInstance(
        study, series, sop, sop_class, "1.2.840.10008.1.2.1", "k", 1, "0", False, (), {},
        patient_id=f"PAT-{study}",
    )  # fmt: skip


TEMPLATE = AuditEvent(AuditAction.INSTANCES_TRANSFERRED, AuditProtocol.DIMSE, subject="WS")


def test_one_event_per_study_in_order() -> None:
    found = [
        instance("1", "1.1", "1.1.1"),
        instance("1", "1.1", "1.1.2", MR),
        instance("2", "2.1", "2.1.1"),
        instance("1", "1.2", "1.2.1"),
    ]
    first, second = per_study(TEMPLATE, found)
    assert first.study_instance_uid == "1"
    assert first.series_instance_uids == ("1.1", "1.2")
    assert first.sop_instance_uids == ("1.1.1", "1.1.2", "1.2.1")
    assert first.sop_class_uids == (CT, MR, CT)  # each instance's class, in order
    assert first.patient_id == "PAT-1"
    assert first.subject == "WS" and first.when == TEMPLATE.when
    assert (second.study_instance_uid, second.sop_instance_uids) == ("2", ("2.1.1",))
    assert second.patient_id == "PAT-2"


def test_metadata_has_no_sop_class_and_nothing_gives_no_event() -> None:
    (event,) = per_study(TEMPLATE, [StoredMetadata("1", "1.1", "1.1.1", b"{}", patient_id="P")])
    assert event.sop_class_uids == () and event.patient_id == "P"
    assert per_study(TEMPLATE, []) == []
