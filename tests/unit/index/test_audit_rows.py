"""The audit trail's rows and its one search statement, without a database: both backends
run the same SQL, differing only in placeholders, and an event survives its row."""

from __future__ import annotations

from datetime import UTC, datetime

from app.audit.event import AuditAction, AuditEvent, AuditProtocol, EventActionCode
from app.audit.query import AuditQuery
from app.index.audit_rows import AUDIT_COLUMNS, audit_event, audit_search, audit_values

SINCE, UNTIL = datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC)


def test_one_statement_for_both_backends() -> None:
    """Regression: each backend built its own near copy of the search."""
    query = AuditQuery(patient_id="P", subject="s", study="1.2", since=SINCE, until=UNTIL)
    sqlite, sqlite_params = audit_search("t", query, mark=lambda _: "?", time=str)
    postgres, postgres_params = audit_search("t", query, mark=lambda n: f"${n}", time=str)
    assert (
        sqlite_params == postgres_params == ["t", "P", "s", "1.2", str(SINCE), str(UNTIL), 100, 0]
    )
    assert postgres.count("$") == 8 and "$8" in postgres
    for n in range(8, 0, -1):
        postgres = postgres.replace(f"${n}", "?")
    assert postgres == sqlite
    assert sqlite.startswith("SELECT tenant, event_time,") and "ORDER BY event_time DESC" in sqlite


def test_only_the_filters_given_are_bound() -> None:
    sql, params = audit_search("t", AuditQuery(limit=5), mark=lambda _: "?", time=str)
    assert params == ["t", 5, 0]
    assert "WHERE tenant = ? ORDER BY" in sql


def test_an_event_survives_its_row() -> None:
    event = AuditEvent(
        AuditAction.INSTANCES_TRANSFERRED,
        AuditProtocol.DIMSE,
        tenant="t",
        when=SINCE,
        action_code=EventActionCode.CREATE,
        subject="MODALITY",
        study_instance_uid="1.2",
        sop_instance_uids=("1.2.1",),
        sop_class_uids=("1.2.840.10008.5.1.4.1.1.2",),
    )
    row = dict(zip(AUDIT_COLUMNS, audit_values(event, lambda when: when), strict=True))
    assert audit_event(row, row["event_time"]) == event
