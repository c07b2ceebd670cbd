"""DICOM audit messages (PS3.15 A.5): the XML an `AuditEvent` is sent to a collector as.

Follows the DICOM Audit Message Schema (A.5.1; element order matters there) and the
message descriptions of A.5.3: which active participants an event has, with which role,
and the study, patient and query participant objects.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

# pynetdicom defines its SOP class constants at import time, out of mypy's sight.
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
)

from app.audit.event import AuditAction, AuditEvent, AuditProtocol, Code, EventActionCode

# Active participant roles (CID 402).
SOURCE_ROLE = Code("110153", "DCM", "Source Role ID")
DESTINATION_ROLE = Code("110152", "DCM", "Destination Role ID")
# Participant object ID types (CID 404 and RFC 3881).
STUDY_INSTANCE_UID = Code("110180", "DCM", "Study Instance UID")
SOP_CLASS_UID = Code("110181", "DCM", "SOP Class UID")
PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
URI = Code("12", "RFC-3881", "URI")
# The Query participant object of a QIDO-RS search: the information model it searches.
STUDY_ROOT_FIND: str = StudyRootQueryRetrieveInformationModelFind

# ParticipantObjectTypeCode and ParticipantObjectTypeCodeRole (A.5.1.2).
PERSON, SYSTEM_OBJECT = "1", "2"
ROLE_PATIENT, ROLE_REPORT, ROLE_SECURITY_RESOURCE = "1", "3", "13"
# ParticipantObjectDataLifeCycle: "Origination, Creation" for stored instances.
LIFE_CYCLE_CREATION = "1"
# AuditSourceTypeCode: "Application Server process tier in a multi-tier system".
APPLICATION_SERVER = "4"
XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>'
# Characters XML 1.0 cannot hold, even escaped (2.2 Char): C0 controls but tab, LF and CR
# (ESC of ISO 2022 Patient IDs, NUL), surrogates, U+FFFE and U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# Instances and series listed per study at most (PS3.15 A.5.3 lets a message leave the
# instance list out): a large series must not make a message too long to send over UDP.
MAX_LISTED = 100


@dataclass(frozen=True)
class AuditSource:
    """The archive as the reporter of its events (AuditSourceIdentification)."""

    source_id: str  # e.g. "pacs@host"
    host: str  # NetworkAccessPointID of the archive's own participant
    ae_title: str = "PACS"
    enterprise_site_id: str | None = None


def audit_message(event: AuditEvent, source: AuditSource, max_bytes: int | None = None) -> bytes:
    """The PS3.15 A.5 AuditMessage of `event`: UTF-8 XML with its declaration. Lists at
    most MAX_LISTED instances and series per study, none if that still makes the message
    longer than `max_bytes`; NumberOfInstances and a "...NotListed" detail keep the
    counts."""
    message = _message(event, source, MAX_LISTED)
    if max_bytes is not None and len(message) > max_bytes:
        message = _message(event, source, 0)
    return message


def _message(event: AuditEvent, source: AuditSource, listed: int) -> bytes:
    root = ET.Element("AuditMessage")
    _event_identification(root, event)
    for participant in _active_participants(event, source):
        root.append(participant)
    site = {"AuditEnterpriseSiteID": source.enterprise_site_id} if source.enterprise_site_id else {}
    audit_source = ET.SubElement(
        root, "AuditSourceIdentification", {**site, "AuditSourceID": source.source_id}
    )
    ET.SubElement(audit_source, "AuditSourceTypeCode", {"csd-code": APPLICATION_SERVER})
    for participant_object in _participant_objects(event, listed):
        root.append(participant_object)
    text = _NOT_XML.sub("\ufffd", ET.tostring(root, encoding="unicode"))
    return XML_DECLARATION + text.encode("utf-8", "replace")


def _coded(parent: ET.Element, name: str, code: Code) -> ET.Element:
    return ET.SubElement(
        parent,
        name,
        {"csd-code": code.value, "codeSystemName": code.scheme, "originalText": code.meaning},
    )


def _event_identification(root: ET.Element, event: AuditEvent) -> None:
    identification = ET.SubElement(
        root,
        "EventIdentification",
        {
            "EventActionCode": event.effective_action_code.value,
            # xsd:dateTime in UTC, millisecond precision.
            "EventDateTime": event.when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "EventOutcomeIndicator": str(int(event.outcome)),
        },
    )
    _coded(identification, "EventID", event.action.event_id)
    if event.event_type is not None:
        _coded(identification, "EventTypeCode", event.event_type.code)
    if event.reason:
        ET.SubElement(identification, "EventOutcomeDescription").text = event.reason


def _access_point(address: str | None) -> dict[str, str]:
    """NetworkAccessPointID and its type: "2" for an IP address, "1" for a host name."""
    if not address:
        return {}
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return {"NetworkAccessPointID": address, "NetworkAccessPointTypeCode": "1"}
    return {"NetworkAccessPointID": address, "NetworkAccessPointTypeCode": "2"}


def _participant(
    user_id: str,
    *,
    requestor: bool,
    role: Code | None,
    alternative: str | None = None,
    user_name: str | None = None,
    address: str | None = None,
) -> ET.Element:
    attributes = {"UserID": user_id}
    if alternative:
        attributes["AlternativeUserID"] = alternative
    if user_name:
        attributes["UserName"] = user_name
    attributes["UserIsRequestor"] = "true" if requestor else "false"
    attributes.update(_access_point(address))
    element = ET.Element("ActiveParticipant", attributes)
    if role is not None:
        _coded(element, "RoleIDCode", role)
    return element


def _roles(event: AuditEvent) -> tuple[Code | None, Code | None]:
    """(caller's role, archive's role) for the message types that define them."""
    if event.action is AuditAction.QUERY:
        return SOURCE_ROLE, DESTINATION_ROLE
    if event.action in (AuditAction.INSTANCES_TRANSFERRED, AuditAction.BEGIN_TRANSFERRING):
        if event.effective_action_code is EventActionCode.CREATE:  # received: STOW, C-STORE
            return SOURCE_ROLE, DESTINATION_ROLE
        if event.destination:  # C-MOVE: a third node receives; the caller only asked
            return None, SOURCE_ROLE
        return DESTINATION_ROLE, SOURCE_ROLE
    return None, None


def _active_participants(event: AuditEvent, source: AuditSource) -> list[ET.Element]:
    caller_role, archive_role = _roles(event)
    # A.5.2.1: a DICOM process names its AE titles in AlternativeUserID as AETITLES=...
    if event.ae_title:
        caller_alternative: str | None = f"AETITLES={event.ae_title}"
    else:
        caller_alternative = event.client
    caller = _participant(
        event.requestor,
        requestor=True,
        role=caller_role,
        alternative=caller_alternative,
        user_name=event.client if event.ae_title else None,
        address=event.address,
    )
    archive_id = event.called or (
        source.ae_title if event.protocol is AuditProtocol.DIMSE else source.source_id
    )
    archive = _participant(
        archive_id,
        requestor=False,
        role=archive_role,
        alternative=f"AETITLES={source.ae_title}",
        address=source.host,
    )
    participants = [caller, archive]
    if event.destination:
        participants.append(
            _participant(
                event.destination,
                requestor=False,
                role=DESTINATION_ROLE,
                alternative=f"AETITLES={event.destination}",
            )
        )
    return participants


def _participant_objects(event: AuditEvent, listed: int) -> list[ET.Element]:
    objects: list[ET.Element] = []
    if event.action is AuditAction.AUDIT_LOG_USED:
        objects.append(_audit_log_object(event))
    if event.action is AuditAction.QUERY and event.query is not None:
        objects.append(_query_object(event))
    if event.study_instance_uid:
        objects.append(_study_object(event, listed))
    if event.patient_id:
        patient = ET.Element(
            "ParticipantObjectIdentification",
            {
                "ParticipantObjectID": event.patient_id,
                "ParticipantObjectTypeCode": PERSON,
                "ParticipantObjectTypeCodeRole": ROLE_PATIENT,
            },
        )
        _coded(patient, "ParticipantObjectIDTypeCode", PATIENT_NUMBER)
        objects.append(patient)
    return objects


def _base64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _query_object(event: AuditEvent) -> ET.Element:
    """A.5.3.11: the SOP Class queried, the query itself base64-encoded."""
    assert event.query is not None
    query = ET.Element(
        "ParticipantObjectIdentification",
        {
            "ParticipantObjectID": event.query_sop_class_uid or STUDY_ROOT_FIND,
            "ParticipantObjectTypeCode": SYSTEM_OBJECT,
            "ParticipantObjectTypeCodeRole": ROLE_REPORT,
        },
    )
    _coded(query, "ParticipantObjectIDTypeCode", SOP_CLASS_UID)
    ET.SubElement(query, "ParticipantObjectQuery").text = _base64(event.query)
    ET.SubElement(
        query,
        "ParticipantObjectDetail",
        {"type": "QueryEncoding", "value": _base64("UTF-8")},
    )
    ET.SubElement(
        query, "ParticipantObjectDetail", {"type": "Protocol", "value": _base64(event.protocol)}
    )
    return query


def _audit_log_object(event: AuditEvent) -> ET.Element:
    """A.5.3.1: the audit log that was read, by its URI."""
    log = ET.Element(
        "ParticipantObjectIdentification",
        {
            "ParticipantObjectID": event.called or "audit",
            "ParticipantObjectTypeCode": SYSTEM_OBJECT,
            "ParticipantObjectTypeCodeRole": ROLE_SECURITY_RESOURCE,
        },
    )
    _coded(log, "ParticipantObjectIDTypeCode", URI)
    ET.SubElement(log, "ParticipantObjectName").text = "Security Audit Log"
    return log


def _study_object(event: AuditEvent, listed: int) -> ET.Element:
    assert event.study_instance_uid is not None
    attributes = {
        "ParticipantObjectID": event.study_instance_uid,
        "ParticipantObjectTypeCode": SYSTEM_OBJECT,
        "ParticipantObjectTypeCodeRole": ROLE_REPORT,
    }
    if (
        event.action is AuditAction.INSTANCES_TRANSFERRED
        and event.effective_action_code is EventActionCode.CREATE
    ):
        attributes["ParticipantObjectDataLifeCycle"] = LIFE_CYCLE_CREATION
    study = ET.Element("ParticipantObjectIdentification", attributes)
    _coded(study, "ParticipantObjectIDTypeCode", STUDY_INSTANCE_UID)
    for series in event.series_instance_uids[:listed]:
        _detail(study, "SeriesInstanceUID", series)
    instances = _instances_by_class(event)
    total = len(event.sop_instance_uids)
    left_out = {
        "SeriesNotListed": max(len(event.series_instance_uids) - listed, 0),
        "InstancesNotListed": total - min(listed, total) if instances else total,
    }
    for name, count in left_out.items():
        if count:
            _detail(study, name, str(count))
    if instances:
        description = ET.SubElement(study, "ParticipantObjectDescription")
        budget = listed
        for sop_class_uid, uids in instances.items():
            counted = {"UID": sop_class_uid, "NumberOfInstances": str(len(uids))}
            sop_class = ET.SubElement(description, "SOPClass", counted)
            for uid in uids[:budget]:
                ET.SubElement(sop_class, "Instance", {"UID": uid})
            budget = max(budget - len(uids), 0)
    return study


def _detail(parent: ET.Element, kind: str, value: str) -> None:
    ET.SubElement(parent, "ParticipantObjectDetail", {"type": kind, "value": _base64(value)})


def _instances_by_class(event: AuditEvent) -> dict[str, list[str]]:
    """SOP Class UID -> its instances; empty when the classes are not known, as the
    schema's SOPClass needs its UID."""
    by_class: dict[str, list[str]] = {}
    if not event.sop_class_uids:
        return by_class
    for sop_class_uid, uid in zip(event.sop_class_uids, event.sop_instance_uids, strict=True):
        by_class.setdefault(sop_class_uid, []).append(uid)
    return by_class
