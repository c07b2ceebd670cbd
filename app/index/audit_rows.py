"""Audit trail rows, shared by the index backends: what an `AuditEvent` is stored as, and
the one search statement both backends run.

Searchable fields get columns (migrations/*/0003_audit.sql); the rest of the event is the
`detail` JSON. A backend supplies its placeholder style and how it binds a time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from app.index.rows import Row
from app.services.ports import AuditEvent, AuditQuery

# Column -> the event field it holds, in the order written (the table's pk aside); every
# other field goes into `detail`.
_COLUMN_FIELDS = {
    "tenant": "tenant",
    "event_time": "when",
    "action": "action",
    "outcome": "outcome",
    "subject": "subject",
    "client": "client",
    "ae_title": "ae_title",
    "address": "address",
    "protocol": "protocol",
    "study_instance_uid": "study_instance_uid",
    "patient_id": "patient_id",
}
AUDIT_COLUMNS = (*_COLUMN_FIELDS, "detail")
# Newest first; pk breaks ties between events of the same millisecond.
AUDIT_ORDER = "event_time DESC, pk DESC"


def _without_nul(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold NUL, which a client's identifiers may carry."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def audit_values(event: AuditEvent, time: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """Values of AUDIT_COLUMNS; `time` converts the event time for the backend."""
    record = event.record()
    columns = [record.pop(name) for name in _COLUMN_FIELDS.values()]
    columns[1] = time(columns[1])
    # Empty and unset fields are left out: most events have few of them.
    detail = {k: _without_nul(v) for k, v in record.items() if v not in (None, "", [])}
    return (*(_without_nul(v) for v in columns), orjson.dumps(detail).decode())


def audit_event(row: Row, when: datetime) -> AuditEvent:
    """The event of a stored row (read by column name); `when` is its parsed time."""
    raw = row["detail"]
    detail: dict[str, Any] = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    record = {**detail, **{name: row[column] for column, name in _COLUMN_FIELDS.items()}}
    record["when"] = when.astimezone(UTC)
    # Rows written before classes paired with instances listed each class once: dropped.
    if len(detail.get("sop_class_uids", ())) != len(detail.get("sop_instance_uids", ())):
        record["sop_class_uids"] = ()
    return AuditEvent.from_record(record)


def audit_search(
    tenant: str,
    query: AuditQuery,
    *,
    mark: Callable[[int], str],
    time: Callable[[datetime], Any],
    select: str = ", ".join(AUDIT_COLUMNS),
) -> tuple[str, list[Any]]:
    """The SELECT of `query` in `tenant`'s trail and its parameters; `mark(n)` is the
    backend's n-th placeholder (1-based). Values are always bound, never formatted."""
    if not isinstance(tenant, str):
        # DESIGN: a query without a tenant is a bug, not "every tenant".
        raise TypeError(f"an audit search needs a tenant, not {tenant!r}")
    clauses: list[str] = []
    params: list[Any] = []

    def bind(value: Any) -> str:
        params.append(value)
        return mark(len(params))

    for column, value in (
        ("tenant", tenant),
        ("patient_id", query.patient_id),
        ("subject", query.subject),
        ("study_instance_uid", query.study),
    ):
        if value is not None:
            clauses.append(f"{column} = {bind(value)}")
    if query.since is not None:
        clauses.append(f"event_time >= {bind(time(query.since))}")  # inclusive
    if query.until is not None:
        clauses.append(f"event_time < {bind(time(query.until))}")  # exclusive
    sql = (
        f"SELECT {select} FROM audit_event WHERE {' AND '.join(clauses)}"
        f" ORDER BY {AUDIT_ORDER} LIMIT {bind(query.limit)} OFFSET {bind(query.offset)}"
    )
    return sql, params
