"""The PS3.15 A.5 audit message of each kind of event: element order of the DICOM Audit
Message Schema (A.5.1), the coded EventID/EventTypeCode/RoleIDCode entries, and the
participant objects of A.5.3 (study, patient, query)."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from app.audit.event import (
    AuditAction,
    AuditEvent,
    AuditEventType,
    AuditProtocol,
    EventActionCode,
    EventOutcome,
)
from app.audit.message import MAX_LISTED, AuditSource, audit_message
from app.auth.principal import Access, Permission, Principal

SOURCE = AuditSource("pacs@archive-1", "archive-1", ae_title="PACS", enterprise_site_id="clinic")
WHEN = datetime(2024, 3, 1, 8, 30, 15, 123456, tzinfo=UTC)
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"

# Children of AuditMessage in schema order: one EventIdentification, one or more
# ActiveParticipant, one AuditSourceIdentification, any ParticipantObjectIdentification.
_ORDER = [
    "EventIdentification",
    "ActiveParticipant",
    "AuditSourceIdentification",
    "ParticipantObjectIdentification",
]
_OUTCOMES = {"0", "4", "8", "12"}
_ACTION_CODES = {"C", "R", "U", "D", "E"}


def parse(event: AuditEvent) -> ET.Element:
    xml = audit_message(event, SOURCE)
    assert xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    return check_schema(ET.fromstring(xml))


def coded(element: ET.Element) -> tuple[str, str, str]:
    assert set(element.attrib) <= {"csd-code", "codeSystemName", "displayName", "originalText"}
    return (
        element.attrib["csd-code"],
        element.attrib["codeSystemName"],
        element.attrib["originalText"],
    )


def check_schema(root: ET.Element) -> ET.Element:
    """The structural rules of the A.5.1 schema that these messages use."""
    assert root.tag == "AuditMessage"
    tags = [child.tag for child in root]
    assert tags == sorted(tags, key=_ORDER.index), tags
    assert tags.count("EventIdentification") == 1
    assert tags.count("AuditSourceIdentification") == 1
    assert tags.count("ActiveParticipant") >= 1

    identification = root.find("EventIdentification")
    assert identification is not None
    assert identification.attrib["EventOutcomeIndicator"] in _OUTCOMES
    assert identification.attrib["EventActionCode"] in _ACTION_CODES
    datetime.fromisoformat(identification.attrib["EventDateTime"])  # xsd:dateTime
    children = [c.tag for c in identification]
    assert children[0] == "EventID"
    assert children[1:] == sorted(
        children[1:], key=["EventTypeCode", "EventOutcomeDescription"].index
    )
    for child in identification:
        if child.tag != "EventOutcomeDescription":
            coded(child)

    for participant in root.iter("ActiveParticipant"):
        assert participant.attrib["UserID"]
        assert participant.attrib["UserIsRequestor"] in ("true", "false")
        if "NetworkAccessPointTypeCode" in participant.attrib:
            assert participant.attrib["NetworkAccessPointTypeCode"] in ("1", "2")
            assert participant.attrib["NetworkAccessPointID"]
        for child in participant:
            assert child.tag == "RoleIDCode"
            coded(child)

    source = root.find("AuditSourceIdentification")
    assert source is not None and source.attrib["AuditSourceID"]
    assert [(c.tag, c.attrib) for c in source] == [("AuditSourceTypeCode", {"csd-code": "4"})]

    for obj in root.iter("ParticipantObjectIdentification"):
        assert obj.attrib["ParticipantObjectID"]
        kids = [c.tag for c in obj]
        assert kids[0] == "ParticipantObjectIDTypeCode"
        coded(obj[0])
        order = ["ParticipantObjectName", "ParticipantObjectQuery", "ParticipantObjectDetail",
                 "ParticipantObjectDescription"]  # fmt: skip
        assert kids[1:] == sorted(kids[1:], key=order.index)
        assert not ("ParticipantObjectName" in kids and "ParticipantObjectQuery" in kids)
        for detail in obj.iter("ParticipantObjectDetail"):
            base64.b64decode(detail.attrib["value"], validate=True)
    return root


def participants(root: ET.Element) -> list[ET.Element]:
    return root.findall("ActiveParticipant")


def role(participant: ET.Element) -> str | None:
    found = participant.find("RoleIDCode")
    return None if found is None else found.attrib["csd-code"]


def objects(root: ET.Element, id_type: str) -> list[ET.Element]:
    return [
        o
        for o in root.findall("ParticipantObjectIdentification")
        if o[0].attrib["csd-code"] == id_type
    ]


def test_instances_stored_over_dimse() -> None:
    event = AuditEvent(
        AuditAction.INSTANCES_TRANSFERRED,
        AuditProtocol.DIMSE,
        when=WHEN,
        action_code=EventActionCode.CREATE,
        subject="MODALITY1",
        ae_title="MODALITY1",
        address="10.1.2.3",
        study_instance_uid="1.2.3",
        sop_instance_uids=("1.2.3.1.1", "1.2.3.1.2"),
        sop_class_uids=("1.2.840.10008.5.1.4.1.1.2",) * 2,
        series_instance_uids=("1.2.3.1",),
        patient_id="PAT-7",
    )
    root = parse(event)
    identification = root.find("EventIdentification")
    assert identification is not None
    assert identification.attrib == {
        "EventActionCode": "C",
        "EventDateTime": "2024-03-01T08:30:15.123Z",
        "EventOutcomeIndicator": "0",
    }
    assert [coded(c) for c in identification] == [("110104", "DCM", "DICOM Instances Transferred")]

    caller, archive = participants(root)
    # The modality sent the instances (Source), the archive received them (Destination).
    assert caller.attrib == {
        "UserID": "MODALITY1",
        "AlternativeUserID": "AETITLES=MODALITY1",
        "UserIsRequestor": "true",
        "NetworkAccessPointID": "10.1.2.3",
        "NetworkAccessPointTypeCode": "2",
    }
    assert role(caller) == "110153"
    assert archive.attrib["UserID"] == "PACS"
    assert archive.attrib["AlternativeUserID"] == "AETITLES=PACS"
    assert archive.attrib["UserIsRequestor"] == "false"
    assert archive.attrib["NetworkAccessPointTypeCode"] == "1"  # a host name
    assert role(archive) == "110152"

    source = root.find("AuditSourceIdentification")
    assert source is not None
    assert source.attrib == {"AuditEnterpriseSiteID": "clinic", "AuditSourceID": "pacs@archive-1"}

    [study] = objects(root, "110180")
    assert study.attrib == {
        "ParticipantObjectID": "1.2.3",
        "ParticipantObjectTypeCode": "2",
        "ParticipantObjectTypeCodeRole": "3",
        "ParticipantObjectDataLifeCycle": "1",
    }
    assert coded(study[0]) == ("110180", "DCM", "Study Instance UID")
    sop_class = study.find("ParticipantObjectDescription/SOPClass")
    assert sop_class is not None
    assert sop_class.attrib == {"UID": "1.2.840.10008.5.1.4.1.1.2", "NumberOfInstances": "2"}
    assert [i.attrib["UID"] for i in sop_class] == ["1.2.3.1.1", "1.2.3.1.2"]
    [series] = study.findall("ParticipantObjectDetail")
    assert series.attrib["type"] == "SeriesInstanceUID"
    assert base64.b64decode(series.attrib["value"]) == b"1.2.3.1"

    [patient] = objects(root, "2")
    assert patient.attrib == {
        "ParticipantObjectID": "PAT-7",
        "ParticipantObjectTypeCode": "1",
        "ParticipantObjectTypeCodeRole": "1",
    }
    assert coded(patient[0]) == ("2", "RFC-3881", "Patient Number")


def test_retrieve_over_dicomweb_by_a_signed_in_user() -> None:
    access = Access(
        Principal("alice", frozenset({Permission.READ}), None, client="viewer", address="::1"),
        "clinic-a",
    )
    event = replace(
        AuditEvent.of(
            access,
            AuditAction.INSTANCES_TRANSFERRED,
            AuditProtocol.DICOMWEB,
            called="/dicomweb/studies/1.2.3",
        ),
        when=WHEN,
        study_instance_uid="1.2.3",
        patient_id="PAT-7",
    )
    assert event.tenant == "clinic-a"
    root = parse(event)
    assert root.find("EventIdentification").attrib["EventActionCode"] == "R"  # type: ignore[union-attr]
    caller, archive = participants(root)
    # The user received the instances (Destination), the archive sent them (Source).
    assert caller.attrib["UserID"] == "alice"
    assert caller.attrib["AlternativeUserID"] == "viewer"
    assert caller.attrib["NetworkAccessPointTypeCode"] == "2"  # IPv6 is an IP address too
    assert role(caller) == "110152"
    assert archive.attrib["UserID"] == "/dicomweb/studies/1.2.3"
    assert role(archive) == "110153"
    assert "ParticipantObjectDataLifeCycle" not in objects(root, "110180")[0].attrib


def test_c_move_names_the_destination() -> None:
    event = AuditEvent(
        AuditAction.INSTANCES_TRANSFERRED,
        AuditProtocol.DIMSE,
        when=WHEN,
        subject="WS1",
        ae_title="WS1",
        destination="STORESCP",
        study_instance_uid="1.2.3",
    )
    caller, archive, destination = participants(parse(event))
    assert (caller.attrib["UserIsRequestor"], role(caller)) == ("true", None)
    assert role(archive) == "110153"
    assert destination.attrib["UserID"] == "STORESCP"
    assert destination.attrib["UserIsRequestor"] == "false"
    assert role(destination) == "110152"


def test_query_carries_the_query_base64_encoded() -> None:
    query = "PatientName=DOE^JANE&PatientBirthDate=19700101&<x>"
    event = AuditEvent(
        AuditAction.QUERY,
        AuditProtocol.DICOMWEB,
        when=WHEN,
        subject="alice",
        address="127.0.0.1",
        query=query,
    )
    xml = audit_message(event, SOURCE)
    assert b"DOE^JANE" not in xml  # only base64, as the schema wants
    root = parse(event)
    identification = root.find("EventIdentification")
    assert identification is not None
    assert identification.attrib["EventActionCode"] == "E"
    assert coded(identification[0]) == ("110112", "DCM", "Query")
    caller, archive = participants(root)
    assert (role(caller), role(archive)) == ("110153", "110152")
    [found] = objects(root, "110181")
    assert found.attrib == {
        "ParticipantObjectID": STUDY_ROOT_FIND,
        "ParticipantObjectTypeCode": "2",
        "ParticipantObjectTypeCodeRole": "3",
    }
    text = found.find("ParticipantObjectQuery")
    assert text is not None and text.text is not None
    assert base64.b64decode(text.text).decode() == query
    details = {d.attrib["type"]: base64.b64decode(d.attrib["value"]) for d in found.iter(
        "ParticipantObjectDetail")}  # fmt: skip
    assert details == {"QueryEncoding": b"UTF-8", "Protocol": b"DICOMweb"}


def test_c_find_names_its_information_model() -> None:
    patient_root = "1.2.840.10008.5.1.4.1.2.1.1"
    event = AuditEvent(
        AuditAction.QUERY,
        AuditProtocol.DIMSE,
        when=WHEN,
        ae_title="FINDSCU",
        query="QueryRetrieveLevel=PATIENT&PatientID=P*",
        query_sop_class_uid=patient_root,
    )
    [found] = objects(parse(event), "110181")
    assert found.attrib["ParticipantObjectID"] == patient_root


@pytest.mark.parametrize(
    ("outcome", "indicator"),
    [
        (EventOutcome.SUCCESS, "0"),
        (EventOutcome.MINOR_FAILURE, "4"),
        (EventOutcome.SERIOUS_FAILURE, "8"),
        (EventOutcome.MAJOR_FAILURE, "12"),
    ],
)
def test_failed_sign_in(outcome: EventOutcome, indicator: str) -> None:
    event = AuditEvent(
        AuditAction.USER_AUTHENTICATION,
        AuditProtocol.DICOMWEB,
        outcome=outcome,
        reason="token expired",
        when=WHEN,
        event_type=AuditEventType.LOGIN,
        address="192.0.2.1",
    )
    root = parse(event)
    identification = root.find("EventIdentification")
    assert identification is not None
    assert identification.attrib["EventOutcomeIndicator"] == indicator
    assert [c.tag for c in identification] == [
        "EventID",
        "EventTypeCode",
        "EventOutcomeDescription",
    ]
    assert coded(identification[0]) == ("110114", "DCM", "User Authentication")
    assert coded(identification[1]) == ("110122", "DCM", "Login")
    assert identification[2].text == "token expired"
    # Without a subject the caller is named by its address.
    assert participants(root)[0].attrib["UserID"] == "192.0.2.1"
    assert root.findall("ParticipantObjectIdentification") == []


def test_rejected_association_is_a_security_alert() -> None:
    event = AuditEvent(
        AuditAction.SECURITY_ALERT,
        AuditProtocol.DIMSE,
        outcome=EventOutcome.MINOR_FAILURE,
        reason="calling AE title not recognized",
        when=WHEN,
        event_type=AuditEventType.NODE_AUTHENTICATION,
        ae_title="INTRUDER",
        address="203.0.113.9",
        called="PACS",
    )
    root = parse(event)
    identification = root.find("EventIdentification")
    assert identification is not None
    assert coded(identification[0]) == ("110113", "DCM", "Security Alert")
    assert coded(identification[1]) == ("110126", "DCM", "Node Authentication")
    caller, archive = participants(root)
    assert caller.attrib["UserID"] == "INTRUDER"
    assert caller.attrib["AlternativeUserID"] == "AETITLES=INTRUDER"
    assert archive.attrib["UserID"] == "PACS"


def test_audit_log_used_names_the_log() -> None:
    event = AuditEvent(
        AuditAction.AUDIT_LOG_USED, AuditProtocol.DICOMWEB, when=WHEN, called="/dicomweb/audit"
    )
    root = parse(event)
    assert coded(root.find("EventIdentification")[0]) == ("110101", "DCM", "Audit Log Used")  # type: ignore[index]
    [log] = objects(root, "12")
    assert log.attrib["ParticipantObjectID"] == "/dicomweb/audit"
    assert log.attrib["ParticipantObjectTypeCodeRole"] == "13"
    assert log.findtext("ParticipantObjectName") == "Security Audit Log"


def test_xml_special_characters_are_escaped() -> None:
    event = AuditEvent(
        AuditAction.USER_AUTHENTICATION,
        AuditProtocol.DICOMWEB,
        outcome=EventOutcome.MINOR_FAILURE,
        reason='bad "token" <script>&',
        subject="a&b<c>",
        when=WHEN,
    )
    root = parse(event)
    assert root.findtext("EventIdentification/EventOutcomeDescription") == 'bad "token" <script>&'
    assert participants(root)[0].attrib["UserID"] == "a&b<c>"


CT, MR = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"


def test_instances_of_several_sop_classes_each_get_their_sop_class() -> None:
    """Regression: instances of two classes gave one SOPClass without the UID the schema
    requires."""
    event = AuditEvent(
        AuditAction.INSTANCES_TRANSFERRED,
        AuditProtocol.DICOMWEB,
        when=WHEN,
        study_instance_uid="1.2.3",
        sop_instance_uids=("1.2.3.1", "1.2.3.2", "1.2.3.3"),
        sop_class_uids=(CT, MR, CT),
    )
    [study] = objects(parse(event), "110180")
    found = {
        c.attrib["UID"]: (c.attrib["NumberOfInstances"], [i.attrib["UID"] for i in c])
        for c in study.iterfind("ParticipantObjectDescription/SOPClass")
    }
    assert found == {CT: ("2", ["1.2.3.1", "1.2.3.3"]), MR: ("1", ["1.2.3.2"])}


def test_instances_of_unknown_class_get_no_sop_class() -> None:
    event = AuditEvent(
        AuditAction.INSTANCES_ACCESSED,
        AuditProtocol.DICOMWEB,
        when=WHEN,
        study_instance_uid="1.2.3",
        sop_instance_uids=("1.2.3.1",),
    )
    [study] = objects(parse(event), "110180")
    assert study.find("ParticipantObjectDescription") is None
    [detail] = study.iterfind("ParticipantObjectDetail")
    assert (detail.attrib["type"], base64.b64decode(detail.attrib["value"])) == (
        "InstancesNotListed",
        b"1",
    )
    with pytest.raises(ValueError, match="pair"):
        AuditEvent(
            AuditAction.QUERY,
            AuditProtocol.DIMSE,
            sop_instance_uids=("1",),
            sop_class_uids=(CT, MR),
        )


def test_control_characters_do_not_make_the_xml_ill_formed() -> None:
    """Regression: an ESC (ISO 2022 Patient ID) or NUL gave XML no parser accepts."""
    event = AuditEvent(
        AuditAction.QUERY,
        AuditProtocol.DIMSE,
        when=WHEN,
        reason="bad\x00reason",
        subject="AE\x07",
        study_instance_uid="1.2.3",
        patient_id="\x1b$BPAT\x1b(B",
        query="PatientID=\x1b$B",
    )
    root = parse(event)  # parses: well-formed
    [patient] = objects(root, "2")
    assert patient.attrib["ParticipantObjectID"] == "\ufffd$BPAT\ufffd(B"
    assert participants(root)[0].attrib["UserID"] == "AE\ufffd"
    assert root.findtext("EventIdentification/EventOutcomeDescription") == "bad\ufffdreason"


def large_series(count: int) -> AuditEvent:
    prefix = "1.2.826.0.1.3680043.8.498.1234567890123456789012345."
    return AuditEvent(
        AuditAction.INSTANCES_TRANSFERRED,
        AuditProtocol.DICOMWEB,
        when=WHEN,
        study_instance_uid="1.2.3",
        series_instance_uids=tuple(f"{prefix}{n}.0" for n in range(count)),
        sop_instance_uids=tuple(f"{prefix}{n}" for n in range(count)),
        sop_class_uids=(CT,) * count,
    )


def test_a_large_series_is_listed_in_part() -> None:
    """Regression: every instance was listed; a series of thousands made a message longer
    than a UDP datagram, dropped whole."""
    event = large_series(5000)
    xml = audit_message(event, SOURCE)
    assert len(xml) < 65507 // 2
    [study] = objects(check_schema(ET.fromstring(xml)), "110180")
    [sop_class] = study.iterfind("ParticipantObjectDescription/SOPClass")
    assert sop_class.attrib["NumberOfInstances"] == "5000"
    assert len(sop_class) == MAX_LISTED
    details = {
        d.attrib["type"]: base64.b64decode(d.attrib["value"]).decode()
        for d in study.iterfind("ParticipantObjectDetail")
        if d.attrib["type"] != "SeriesInstanceUID"
    }
    assert details == {"SeriesNotListed": "4900", "InstancesNotListed": "4900"}
    # Under a byte limit none are listed, the counts stay.
    small = audit_message(event, SOURCE, max_bytes=len(xml) - 1)
    [study] = objects(check_schema(ET.fromstring(small)), "110180")
    [sop_class] = study.iterfind("ParticipantObjectDescription/SOPClass")
    assert (sop_class.attrib["NumberOfInstances"], len(sop_class)) == ("5000", 0)
    assert len(audit_message(large_series(MAX_LISTED), SOURCE)) < len(xml)


def test_naive_times_are_refused_and_others_kept_in_utc() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        AuditEvent(AuditAction.QUERY, AuditProtocol.DIMSE, when=datetime(2024, 1, 1))
    event = AuditEvent(
        AuditAction.QUERY,
        AuditProtocol.DIMSE,
        when=datetime.fromisoformat("2024-03-01T10:30:15.123+02:00"),
    )
    assert event.when == datetime(2024, 3, 1, 8, 30, 15, 123000, tzinfo=UTC)


def test_the_log_summary_holds_no_patient_data() -> None:
    event = AuditEvent(
        AuditAction.QUERY,
        AuditProtocol.DICOMWEB,
        when=WHEN,
        subject="alice",
        study_instance_uid="1.2.3.4.5",
        patient_id="PAT-7",
        query="PatientName=DOE^JANE",
    )
    summary = event.summary()
    for secret in ("PAT-7", "DOE", "1.2.3.4.5"):
        assert secret not in summary
    assert "query" in summary and "outcome=0" in summary
