"""AuditService on a real index (SQLite and PostgreSQL) and a real collector: events are
written in batches, from any thread, and go to both; an index that cannot take them gets
them retried, then logged as lost without patient data, never dropped silently."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.audit.event import AuditAction, AuditEvent, AuditProtocol
from app.audit.message import AuditSource
from app.audit.query import AuditQuery
from app.audit.syslog import SyslogSender, parse_syslog_url
from app.auth.principal import Access, Forbidden, Permission, Principal
from app.index.sqlite import SqliteIndex
from app.services.audit import BATCH, AuditService
from app.services.ports import Index
from tests.support.rsyslog import Collector, running_rsyslog

ADMIN = Access(Principal("root", frozenset(Permission), None), "default")


def query(n: int, **fields: object) -> AuditEvent:
    values: dict[str, object] = {
        "action": AuditAction.QUERY,
        "protocol": AuditProtocol.DICOMWEB,
        "subject": f"user-{n}",
        **fields,
    }
    return AuditEvent(**values)  # type: ignore[arg-type]


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    with running_rsyslog(tmp_path / "rsyslog") as found:
        yield found


async def test_many_events_are_written_in_batches(index: Index) -> None:
    service = AuditService(index)
    count = BATCH * 2 + 17
    for n in range(count):
        service.record(query(n))
    await service.flush()
    found = await service.search(ADMIN, AuditQuery(limit=1000))
    assert sorted(e.subject or "" for e in found) == sorted(f"user-{n}" for n in range(count))
    assert service.lost == 0
    await service.close()


async def test_events_recorded_on_other_threads(index: Index) -> None:
    service = AuditService(index)
    threads = [threading.Thread(target=service.record, args=(query(n),)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        await asyncio.to_thread(thread.join)
    await asyncio.sleep(0)  # the handed-over events run on the loop
    await service.flush()
    assert len(await service.search(ADMIN, AuditQuery())) == 8
    await service.close()


async def test_searching_needs_the_admin_permission(index: Index) -> None:
    service = AuditService(index)
    reader = Access(Principal("r", frozenset({Permission.READ}), None))
    with pytest.raises(Forbidden):
        await service.search(reader, AuditQuery())
    other_tenant = Access(Principal("a", frozenset(Permission), frozenset({"a"})), "b")
    with pytest.raises(Forbidden):
        await service.search(other_tenant, AuditQuery())
    await service.close()


async def test_recorded_and_forwarded_events_reach_index_and_collector(
    index: Index, collector: Collector
) -> None:
    sender = SyslogSender(parse_syslog_url(collector.udp_url), AuditSource("pacs@t", "t"))
    service = AuditService(index, sender)
    service.record(query(1))
    # Written with the data by the index itself: only the collector still needs it.
    service.forward(query(2))
    await service.flush()
    assert await sender.flush(10)
    assert [e.subject for e in await service.search(ADMIN, AuditQuery())] == ["user-1"]
    assert len(collector.wait_for(2)) == 2
    await service.close()


async def test_an_index_that_fails_gets_retries_then_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    index = await SqliteIndex.open(tmp_path / "index.sqlite")
    await index.close()  # every write now fails
    service = AuditService(index, retry_pauses=(0.01, 0.01))
    secret = query(
        1,
        patient_id="PAT-SECRET",
        study_instance_uid="1.2.3.999",
        query="PatientName=DOE^JANE&PatientBirthDate=19700101",
    )
    with caplog.at_level(logging.WARNING, logger="app.services.audit"):
        service.record(secret)
        service.record(query(2))
        await service.flush()
    assert service.lost == 2
    # One line for both: a line per lost event would let refused callers flood the log.
    [lost] = [r for r in caplog.records if "not kept in the index" in r.getMessage()]
    assert "2 lost so far" in lost.getMessage()
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2
    text = caplog.text
    for patient_data in ("PAT-SECRET", "DOE", "19700101", "1.2.3.999"):
        assert patient_data not in text
    assert "query" in lost.getMessage()  # which kind of event was lost is said
    await service.close()


async def test_a_full_queue_does_not_flood_the_log(
    index: Index, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: each event lost to a full queue (unauthenticated callers can make them
    fast) was one ERROR line."""
    service = AuditService(index, queue_size=1)
    with caplog.at_level(logging.WARNING, logger="app.services.audit"):
        for n in range(1000):
            service.record(query(n))
        await service.flush()
    assert service.lost == 999
    [lost] = [r for r in caplog.records if "not kept in the index" in r.getMessage()]
    assert "the audit queue is full" in lost.getMessage()
    await service.close()
