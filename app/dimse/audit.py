"""How DIMSE requests reach the audit trail: the one place that turns an association and
its `Access` into audit events (calling AE title, its address, our AE title).

`AuditService.record` never blocks, so a handler records and goes on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from urllib.parse import urlencode

from pydicom.dataset import Dataset

from app.audit.event import (
    AuditAction,
    AuditEvent,
    AuditEventType,
    AuditProtocol,
    EventActionCode,
    EventOutcome,
)
from app.auth.ae_policy import DimseService
from app.auth.principal import DEFAULT_TENANT, Access
from app.dimse.association import Association
from app.dimse.bridge import Bridge, access_for, policy_of
from app.dimse.status import not_authorized
from app.services.audit import per_study
from app.services.ports import StoredInstance


def association_event(
    assoc: Association, bridge: Bridge, access: Access, action: AuditAction
) -> AuditEvent:
    """An event for a request on `assoc`, made by the caller of `access`."""
    return AuditEvent.of(
        access,
        action,
        AuditProtocol.DIMSE,
        ae_title=assoc.peer_ae.strip(),
        called=bridge.config.ae_title.strip(),
    )


def store_event(assoc: Association, bridge: Bridge, access: Access) -> AuditEvent:
    """What the store service fills in for a C-STORE request."""
    return replace(
        association_event(assoc, bridge, access, AuditAction.INSTANCES_TRANSFERRED),
        action_code=EventActionCode.CREATE,
    )


def refuse(assoc: Association, bridge: Bridge, service: DimseService) -> Dataset:
    """The 0124 refusal of a service the calling AE's policy does not allow, audited as a
    Security Alert (Use of Restricted Function)."""
    status = not_authorized(assoc, service)
    bridge.archive.audit.record(
        replace(
            association_event(
                assoc,
                bridge,
                access_for(assoc, policy_of(assoc, bridge)),
                AuditAction.SECURITY_ALERT,
            ),
            event_type=AuditEventType.USE_OF_RESTRICTED_FUNCTION,
            outcome=EventOutcome.MINOR_FAILURE,
            reason=str(status.ErrorComment),
        )
    )
    return status


def record_query(
    assoc: Association,
    bridge: Bridge,
    access: Access,
    identifier: Dataset | None,
    sop_class_uid: str,
    *,
    outcome: EventOutcome = EventOutcome.SUCCESS,
    reason: str = "",
) -> None:
    """A C-FIND request, its keys written `Keyword=value&...`."""
    bridge.archive.audit.record(
        replace(
            association_event(assoc, bridge, access, AuditAction.QUERY),
            query=query_text(identifier),
            query_sop_class_uid=sop_class_uid,
            outcome=outcome,
            reason=reason,
        )
    )


def record_transfer(
    assoc: Association,
    bridge: Bridge,
    instances: Sequence[StoredInstance],
    *,
    destination: str | None,
    failure: str = "",
) -> None:
    """Instances sent by C-MOVE (to `destination`) or C-GET: one event per study; a failed
    or unfinished sub-operation makes the outcome a failure, `failure` says which. Nothing
    matched is a failed transfer too, recorded once."""
    if not instances:
        failure = failure or "no stored instance matches the identifier"
    template = replace(
        association_event(
            assoc,
            bridge,
            access_for(assoc, policy_of(assoc, bridge)),
            AuditAction.INSTANCES_TRANSFERRED,
        ),
        destination=destination,
        outcome=EventOutcome.MINOR_FAILURE if failure else EventOutcome.SUCCESS,
        reason=failure,
    )
    for event in per_study(template, instances) or [template]:
        bridge.archive.audit.record(event)


def record_rejected(bridge: Bridge, assoc: Association, reason: str) -> None:
    """A refused association (Security Alert, Node Authentication)."""
    calling = assoc.peer_ae.strip()
    record_refused_node(bridge, assoc.address, reason, calling)


def record_refused_node(
    bridge: Bridge, address: str | None, reason: str, calling: str | None = None
) -> None:
    """A peer refused before any request: an association (with its calling AE title) or a
    DICOM TLS connection whose handshake failed (without one)."""
    tenant = bridge.config.ae_policies.of(calling).tenant if calling else DEFAULT_TENANT
    bridge.archive.audit.record(
        AuditEvent(
            AuditAction.SECURITY_ALERT,
            AuditProtocol.DIMSE,
            outcome=EventOutcome.MINOR_FAILURE,
            reason=reason,
            tenant=tenant,
            event_type=AuditEventType.NODE_AUTHENTICATION,
            subject=calling,
            ae_title=calling,
            address=address,
            called=bridge.config.ae_title.strip(),
        )
    )


def query_text(identifier: Dataset | None) -> str:
    """The keys of a C-FIND identifier that have a value, as `Keyword=value&...`."""
    if identifier is None:
        return ""
    pairs = []
    try:
        for element in identifier:
            if element.VR == "SQ" or element.value in (None, "", b""):
                continue
            name = element.keyword or f"{int(element.tag):08X}"
            pairs.append((name, str(element.value)))
    except Exception:  # pydicom raises many types for an undecodable identifier
        return "(undecodable identifier)"
    return urlencode(pairs, safe="*?,^ ")
