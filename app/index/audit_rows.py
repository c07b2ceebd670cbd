"""Audit trail rows, shared by the index backends: what an `AuditEvent` is stored as.

Searchable fields get columns (migrations/*/0003_audit.sql); the rest of the event is the
`detail` JSON. SQL stays in each backend; the filters are built here once, with the
backend's placeholder style.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from app.audit.event import (
    AuditAction,
    AuditEvent,
    AuditEventType,
    AuditProtocol,
    EventActionCode,
    EventOutcome,
)
from app.index.rows import Row

# Columns written for each event, in this order (the table's pk and nothing else aside).
AUDIT_COLUMNS = (
    "tenant",
    "event_time",
    "action",
    "outcome",
    "subject",
    "client",
    "ae_title",
    "address",
    "protocol",
    "study_instance_uid",
    "patient_id",
    "detail",
)
# Newest first; pk breaks ties between events of the same millisecond.
AUDIT_ORDER = "event_time DESC, pk DESC"


def _detail(event: AuditEvent) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "reason": event.reason,
        "action_code": event.action_code.value if event.action_code else None,
        "event_type": event.event_type.value if event.event_type else None,
        "called": event.called,
        "destination": event.destination,
        "series_instance_uids": list(event.series_instance_uids),
        "sop_instance_uids": list(event.sop_instance_uids),
        "sop_class_uids": list(event.sop_class_uids),
        "query": event.query,
        "query_sop_class_uid": event.query_sop_class_uid,
    }
    # Empty and unset fields are left out: most events have few of them.
    return {k: _without_nul(v) for k, v in detail.items() if v not in (None, "", [])}


def _without_nul(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold NUL, which a client's identifiers may carry."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def audit_values(event: AuditEvent, time: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """Values of AUDIT_COLUMNS; `time` converts the event time for the backend."""
    values = (
        event.tenant,
        time(event.when),
        event.action.value,
        int(event.outcome),
        event.subject,
        event.client,
        event.ae_title,
        event.address,
        event.protocol.value,
        event.study_instance_uid,
        event.patient_id,
        orjson.dumps(_detail(event)).decode(),
    )
    return tuple(_without_nul(v) for v in values)


def audit_event(row: Row, when: datetime) -> AuditEvent:
    """The event of a stored row (read by column name); `when` is its parsed time."""
    raw = row["detail"]
    detail: dict[str, Any] = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    action_code = detail.get("action_code")
    event_type = detail.get("event_type")
    return AuditEvent(
        action=AuditAction(row["action"]),
        protocol=AuditProtocol(row["protocol"]),
        outcome=EventOutcome(row["outcome"]),
        reason=detail.get("reason", ""),
        tenant=row["tenant"],
        when=when.astimezone(UTC),
        action_code=EventActionCode(action_code) if action_code else None,
        event_type=AuditEventType(event_type) if event_type else None,
        subject=row["subject"],
        client=row["client"],
        ae_title=row["ae_title"],
        address=row["address"],
        called=detail.get("called"),
        destination=detail.get("destination"),
        study_instance_uid=row["study_instance_uid"],
        series_instance_uids=tuple(detail.get("series_instance_uids", ())),
        sop_instance_uids=tuple(detail.get("sop_instance_uids", ())),
        sop_class_uids=_paired(detail),
        patient_id=row["patient_id"],
        query=detail.get("query"),
        query_sop_class_uid=detail.get("query_sop_class_uid"),
    )


def _paired(detail: dict[str, Any]) -> tuple[str, ...]:
    """The stored SOP classes if they pair with the instances (rows written before they
    did list each class once)."""
    classes = tuple(detail.get("sop_class_uids", ()))
    return classes if len(classes) == len(detail.get("sop_instance_uids", ())) else ()


def audit_filter(
    mark: Callable[[int], str],
    time: Callable[[datetime], Any],
    tenant: str,
    *,
    patient_id: str | None,
    subject: str | None,
    study: str | None,
    since: datetime | None,
    until: datetime | None,
) -> tuple[str, list[Any]]:
    """WHERE clause and its parameters; `mark(n)` is the n-th placeholder
    (1-based). Values are always bound. `since` is inclusive, `until` exclusive."""
    clauses: list[str] = []
    params: list[Any] = []

    def add(condition: str, value: Any) -> None:
        params.append(value)
        clauses.append(condition.format(mark(len(params))))

    if not isinstance(tenant, str):
        # DESIGN: a query without a tenant is a bug, not "every tenant".
        raise TypeError(f"an audit search needs a tenant, not {tenant!r}")
    add("tenant = {}", tenant)
    if patient_id is not None:
        add("patient_id = {}", patient_id)
    if subject is not None:
        add("subject = {}", subject)
    if study is not None:
        add("study_instance_uid = {}", study)
    if since is not None:
        add("event_time >= {}", time(since))
    if until is not None:
        add("event_time < {}", time(until))
    return " AND ".join(clauses), params
