"""The audit trail in the index, on SQLite and PostgreSQL: events kept whole, searched by
tenant, time, patient, user and study (newest first), and written in a caller's
transaction so that they commit or roll back with the data."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone

import asyncpg
import pytest

from app.audit.event import (
    AuditAction,
    AuditEvent,
    AuditEventType,
    AuditProtocol,
    EventActionCode,
    EventOutcome,
)
from app.audit.query import AuditQuery
from app.index import postgres_audit, sqlite_audit
from app.services.ports import Index
from tests.integration.conftest import Backend

T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)


def event(minutes: int, **fields: object) -> AuditEvent:
    values: dict[str, object] = {
        "action": AuditAction.QUERY,
        "protocol": AuditProtocol.DICOMWEB,
        "when": T0 + timedelta(minutes=minutes),
        **fields,
    }
    return AuditEvent(**values)  # type: ignore[arg-type]


async def test_an_event_comes_back_whole(index: Index) -> None:
    stored = AuditEvent(
        action=AuditAction.INSTANCES_TRANSFERRED,
        protocol=AuditProtocol.DIMSE,
        outcome=EventOutcome.MINOR_FAILURE,
        reason="C-MOVE destination unknown",
        tenant="clinic-a",
        # Not UTC on the way in: kept as the same instant, in UTC.
        when=datetime(2024, 3, 1, 9, 30, 15, 123000, tzinfo=timezone(timedelta(hours=1))),
        action_code=EventActionCode.READ,
        event_type=AuditEventType.USE_OF_RESTRICTED_FUNCTION,
        subject="WORKSTATION",
        client="viewer-app",
        ae_title="WORKSTATION",
        address="10.0.0.7",
        called="PACS",
        destination="ELSEWHERE",
        study_instance_uid="1.2.3",
        series_instance_uids=("1.2.3.1", "1.2.3.2"),
        sop_instance_uids=("1.2.3.1.1",),
        sop_class_uids=("1.2.840.10008.5.1.4.1.1.2",),
        patient_id="PAT-1",
        query="PatientName=DOE^JANE&PatientBirthDate=19700101",
        query_sop_class_uid="1.2.840.10008.5.1.4.1.2.2.1",
    )
    await index.add_audit_events([stored])
    [found] = await index.search_audit("clinic-a", AuditQuery())
    assert found == stored
    assert found.when == datetime(2024, 3, 1, 8, 30, 15, 123000, tzinfo=UTC)


async def test_filters_and_order(index: Index) -> None:
    events = [
        event(0, tenant="a", subject="alice", patient_id="P1", study_instance_uid="1.1"),
        event(1, tenant="a", subject="bob", patient_id="P1", study_instance_uid="1.2"),
        event(2, tenant="a", subject="alice", patient_id="P2", study_instance_uid="1.3"),
        event(3, tenant="b", subject="alice", patient_id="P1", study_instance_uid="1.1"),
        event(4, tenant="a", subject="carol"),
    ]
    await index.add_audit_events(events)

    async def minutes(tenant: str, **filters: object) -> list[int]:
        found = await index.search_audit(tenant, AuditQuery(**filters))  # type: ignore[arg-type]
        return [int((e.when - T0).total_seconds() // 60) for e in found]

    assert await minutes("a") == [4, 2, 1, 0]  # newest first, tenant b left out
    assert await minutes("b") == [3]
    assert await minutes("a", patient_id="P1") == [1, 0]
    assert await minutes("b", patient_id="P1") == [3]
    assert await minutes("a", subject="alice") == [2, 0]
    assert await minutes("a", study="1.1") == [0]
    # since inclusive, until exclusive
    assert await minutes("a", since=T0 + timedelta(minutes=1)) == [4, 2, 1]
    assert await minutes("a", until=T0 + timedelta(minutes=2)) == [1, 0]
    between = {"since": T0 + timedelta(minutes=1), "until": T0 + timedelta(minutes=4)}
    assert await minutes("a", **between) == [2, 1]
    # A bound in another time zone means the same instant.
    plus2 = timezone(timedelta(hours=2))
    assert await minutes("a", since=(T0 + timedelta(minutes=2)).astimezone(plus2)) == [4, 2]
    assert await minutes("a", subject="alice", patient_id="P2") == [2]
    assert await minutes("a", subject="nobody") == []
    # paging
    assert await minutes("a", limit=2) == [4, 2]
    assert await minutes("a", limit=2, offset=2) == [1, 0]
    assert await minutes("a", limit=2, offset=4) == []


async def test_a_search_without_a_tenant_is_refused(index: Index) -> None:
    """Regression: tenant None searched every tenant's trail (DESIGN: a bug, not a default)."""
    await index.add_audit_events([event(0, tenant="a"), event(1, tenant="b")])
    with pytest.raises(TypeError, match="needs a tenant"):
        await index.search_audit(None, AuditQuery())  # type: ignore[arg-type]


async def test_values_are_bound_not_formatted(index: Index) -> None:
    await index.add_audit_events([event(0, subject="x' OR '1'='1", patient_id="P\x00Q")])
    assert await index.search_audit("default", AuditQuery(subject="x")) == []
    [found] = await index.search_audit("default", AuditQuery(subject="x' OR '1'='1"))
    assert found.patient_id == "PQ"  # NUL dropped: PostgreSQL text cannot hold it


async def test_events_of_the_same_millisecond_keep_their_order(index: Index) -> None:
    await index.add_audit_events([event(0, subject="first"), event(0, subject="second")])
    await index.add_audit_events([event(0, subject="third")])
    found = await index.search_audit("default", AuditQuery())
    assert [e.subject for e in found] == ["third", "second", "first"]


async def test_an_event_written_in_a_data_transaction_rolls_back_with_it(
    backend: Backend, index: Index
) -> None:
    """The module-level insert joins the caller's transaction (as add_instance will)."""
    kept, dropped = event(0, subject="committed"), event(1, subject="rolled-back")
    if backend.name == "sqlite":
        db = sqlite3.connect(backend.location, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            for item, commit in ((kept, True), (dropped, False)):
                db.execute("BEGIN IMMEDIATE")
                sqlite_audit.insert_audit_event(db, item)
                db.execute("COMMIT" if commit else "ROLLBACK")
        finally:
            db.close()
    else:
        conn = await asyncpg.connect(backend.location)
        try:
            async with conn.transaction():
                await postgres_audit.insert_audit_event(conn, kept)
            with pytest.raises(RuntimeError):
                async with conn.transaction():
                    await postgres_audit.insert_audit_event(conn, dropped)
                    raise RuntimeError("the data write failed")
        finally:
            await conn.close()
    assert [e.subject for e in await index.search_audit("default", AuditQuery())] == ["committed"]
