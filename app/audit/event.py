"""Audit events: who did what to whose data, when, and how it ended (PS3.15 A.5.3).

Pure data. Services and protocol layers build an `AuditEvent` per access to patient data
(and per refused sign-in or association); `app/services/audit.py` keeps it in the index and
sends it to a syslog collector as a PS3.15 audit message (`app/audit/message.py`).

An event holds patient data (Patient ID, the text of a query, which may name a patient and
a birth date): that is what the audit trail is for, but none of it may reach the
application log. `summary()` is the only text about an event meant for the log.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import Enum, IntEnum, StrEnum
from typing import Any

from app.auth.principal import DEFAULT_TENANT, Access


@dataclass(frozen=True)
class Code:
    """A coded entry (PS3.3 8.8): code value, coding scheme designator, code meaning."""

    value: str
    scheme: str
    meaning: str


def _dcm(value: str, meaning: str) -> Code:
    return Code(value, "DCM", meaning)


class AuditAction(StrEnum):
    """The PS3.15 A.5.3 audit message an event is reported as (its EventID, CID 400)."""

    # A.5.3.1: the audit trail itself was read (the admin search).
    AUDIT_LOG_USED = "audit-log-used"
    # A.5.3.2: C-MOVE/C-GET sub-operations about to start.
    BEGIN_TRANSFERRING = "begin-transferring"
    # A.5.3.3: instances read, changed or deleted in place (metadata, rendered, delete).
    INSTANCES_ACCESSED = "instances-accessed"
    # A.5.3.4: instances sent or received: STOW, C-STORE (create), WADO, C-MOVE, C-GET (read).
    INSTANCES_TRANSFERRED = "instances-transferred"
    # A.5.3.11: QIDO-RS, C-FIND.
    QUERY = "query"
    # A.5.3.12: a refused association, a request without the needed permission.
    SECURITY_ALERT = "security-alert"
    # A.5.3.13: sign-in succeeded or failed.
    USER_AUTHENTICATION = "user-authentication"

    @property
    def event_id(self) -> Code:
        return _EVENT_ID[self]


_EVENT_ID = {
    AuditAction.AUDIT_LOG_USED: _dcm("110101", "Audit Log Used"),
    AuditAction.BEGIN_TRANSFERRING: _dcm("110102", "Begin Transferring DICOM Instances"),
    AuditAction.INSTANCES_ACCESSED: _dcm("110103", "DICOM Instances Accessed"),
    AuditAction.INSTANCES_TRANSFERRED: _dcm("110104", "DICOM Instances Transferred"),
    AuditAction.QUERY: _dcm("110112", "Query"),
    AuditAction.SECURITY_ALERT: _dcm("110113", "Security Alert"),
    AuditAction.USER_AUTHENTICATION: _dcm("110114", "User Authentication"),
}


class EventActionCode(StrEnum):
    """EventActionCode of EventIdentification (PS3.15 A.5.1)."""

    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"


# The action code an event gets unless the caller says otherwise (PS3.15 A.5.3).
DEFAULT_ACTION_CODE = {
    AuditAction.AUDIT_LOG_USED: EventActionCode.READ,
    AuditAction.BEGIN_TRANSFERRING: EventActionCode.EXECUTE,
    AuditAction.INSTANCES_ACCESSED: EventActionCode.READ,
    AuditAction.INSTANCES_TRANSFERRED: EventActionCode.READ,
    AuditAction.QUERY: EventActionCode.EXECUTE,
    AuditAction.SECURITY_ALERT: EventActionCode.EXECUTE,
    AuditAction.USER_AUTHENTICATION: EventActionCode.EXECUTE,
}


class AuditEventType(StrEnum):
    """EventTypeCode refining an event (CID 401)."""

    LOGIN = "login"
    LOGOUT = "logout"
    NODE_AUTHENTICATION = "node-authentication"  # a refused association or TLS peer
    USE_OF_RESTRICTED_FUNCTION = "use-of-restricted-function"  # no permission for it

    @property
    def code(self) -> Code:
        return _EVENT_TYPE[self]


_EVENT_TYPE = {
    AuditEventType.LOGIN: _dcm("110122", "Login"),
    AuditEventType.LOGOUT: _dcm("110123", "Logout"),
    AuditEventType.NODE_AUTHENTICATION: _dcm("110126", "Node Authentication"),
    AuditEventType.USE_OF_RESTRICTED_FUNCTION: _dcm("110132", "Use of Restricted Function"),
}


class EventOutcome(IntEnum):
    """EventOutcomeIndicator (PS3.15 A.5.1)."""

    SUCCESS = 0
    MINOR_FAILURE = 4  # the request failed: refused, not found, bad input
    SERIOUS_FAILURE = 8  # the request failed on our side
    MAJOR_FAILURE = 12  # the archive is unavailable


class AuditProtocol(StrEnum):
    DICOMWEB = "DICOMweb"
    DIMSE = "DIMSE"


# Longest caller-chosen text kept in an event, and what marks a cut one.
MAX_TEXT = 2048
CUT = "...[cut]"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AuditEvent:
    """One audited event. `when` is timezone-aware UTC."""

    action: AuditAction
    protocol: AuditProtocol
    outcome: EventOutcome = EventOutcome.SUCCESS
    # EventOutcomeDescription: why it failed. Say what happened, never echo patient data.
    reason: str = ""
    tenant: str = DEFAULT_TENANT
    when: datetime = field(default_factory=utc_now)
    # None: the action's default (DEFAULT_ACTION_CODE).
    action_code: EventActionCode | None = None
    event_type: AuditEventType | None = None
    # Who: token subject (or "anonymous"), OAuth client, calling AE title, network address.
    subject: str | None = None
    client: str | None = None
    ae_title: str | None = None
    address: str | None = None
    # The archive's side: the called AE title (DIMSE) or the request path (DICOMweb).
    called: str | None = None
    # C-MOVE: the AE title the instances are sent to.
    destination: str | None = None
    # What. One event names at most one study; a request spanning studies gives one each.
    study_instance_uid: str | None = None
    series_instance_uids: tuple[str, ...] = ()
    sop_instance_uids: tuple[str, ...] = ()
    # The SOP Class UID of each of `sop_instance_uids`, in the same order; empty when the
    # classes are not known (metadata reads).
    sop_class_uids: tuple[str, ...] = ()
    patient_id: str | None = None
    # Queries: the query as asked (QIDO query string; C-FIND keys as Keyword=value&...),
    # and the information model's SOP Class UID for C-FIND.
    query: str | None = None
    query_sop_class_uid: str | None = None

    def __post_init__(self) -> None:
        if self.when.tzinfo is None:
            raise ValueError("AuditEvent.when must be timezone-aware")
        if self.when.utcoffset():
            object.__setattr__(self, "when", self.when.astimezone(UTC))
        if self.sop_class_uids and len(self.sop_class_uids) != len(self.sop_instance_uids):
            raise ValueError("AuditEvent.sop_class_uids must pair with sop_instance_uids")
        # Text the caller chooses (a path, a query, a reason quoting it) is bounded, so that
        # nobody, signed in or not, can write rows or syslog messages of any size.
        for name in ("called", "query", "reason", "subject", "client", "destination"):
            value = getattr(self, name)
            if value is not None and len(value) > MAX_TEXT:
                object.__setattr__(self, name, value[: MAX_TEXT - len(CUT)] + CUT)

    @property
    def effective_action_code(self) -> EventActionCode:
        return self.action_code or DEFAULT_ACTION_CODE[self.action]

    @property
    def requestor(self) -> str:
        """The UserID of whoever asked: subject, else AE title, else address."""
        return self.subject or self.ae_title or self.address or "unknown"

    def summary(self) -> str:
        """A line about the event for the application log: no patient data, no UIDs."""
        return (
            f"{self.action} {self.effective_action_code} outcome={int(self.outcome)} "
            f"tenant={self.tenant} protocol={self.protocol} at {self.when.isoformat()}"
        )

    def record(self) -> dict[str, Any]:
        """Every field by name as a plain value (enums as their values, tuples as lists,
        `when` as it is): what a store keeps, read back by `from_record`."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> AuditEvent:
        """The event `record()` gave; fields it lacks take their defaults."""
        action_code = record.get("action_code")
        event_type = record.get("event_type")
        return cls(
            action=AuditAction(record["action"]),
            protocol=AuditProtocol(record["protocol"]),
            outcome=EventOutcome(record.get("outcome", EventOutcome.SUCCESS)),
            reason=record.get("reason") or "",
            tenant=record["tenant"],
            when=record["when"],
            action_code=EventActionCode(action_code) if action_code else None,
            event_type=AuditEventType(event_type) if event_type else None,
            subject=record.get("subject"),
            client=record.get("client"),
            ae_title=record.get("ae_title"),
            address=record.get("address"),
            called=record.get("called"),
            destination=record.get("destination"),
            study_instance_uid=record.get("study_instance_uid"),
            series_instance_uids=tuple(record.get("series_instance_uids") or ()),
            sop_instance_uids=tuple(record.get("sop_instance_uids") or ()),
            sop_class_uids=tuple(record.get("sop_class_uids") or ()),
            patient_id=record.get("patient_id"),
            query=record.get("query"),
            query_sop_class_uid=record.get("query_sop_class_uid"),
        )

    @classmethod
    def of(
        cls,
        access: Access,
        action: AuditAction,
        protocol: AuditProtocol,
        *,
        called: str | None = None,
        ae_title: str | None = None,
    ) -> AuditEvent:
        """An event for the caller of `access` (subject, client, address, tenant) on
        `called`; what it is about is added with `dataclasses.replace` (type-checked)."""
        principal = access.principal
        return cls(
            action,
            protocol,
            tenant=access.tenant,
            subject=principal.subject,
            client=principal.client,
            address=principal.address,
            ae_title=ae_title,
            called=called,
        )


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    return value
