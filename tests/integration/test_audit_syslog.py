"""Audit messages reach a real collector, Debian's rsyslog: over UDP (RFC 5426) and over
TLS (RFC 5425) with the collector's certificate checked against the configured CA; a
collector that is down or not trusted never blocks the sender, which reconnects."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.audit.event import AuditAction, AuditEvent, AuditProtocol, EventActionCode, EventOutcome
from app.audit.message import AuditSource
from app.audit.syslog import SyslogSender, parse_syslog_url
from tests.support.certificates import make_pki
from tests.support.rsyslog import Collector, running_rsyslog
from tests.support.server import free_port, running_server

SOURCE = AuditSource("pacs@test", "test-host", ae_title="PACS")
# "<input> <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - BOM MSG", as rsyslog wrote it.
_RECEIVED = re.compile(
    rb"(?P<input>\S+) <(?P<pri>\d+)>1 (?P<timestamp>\S+) (?P<hostname>\S+) (?P<app>\S+) "
    rb"(?P<procid>\S+) (?P<msgid>\S+) - \xef\xbb\xbf(?P<xml><\?xml .*</AuditMessage>)"
)


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    with running_rsyslog(tmp_path / "rsyslog") as found:
        yield found


def stored(outcome: EventOutcome = EventOutcome.SUCCESS) -> AuditEvent:
    return AuditEvent(
        AuditAction.INSTANCES_TRANSFERRED,
        AuditProtocol.DICOMWEB,
        outcome=outcome,
        action_code=EventActionCode.CREATE,
        subject="alice",
        address="127.0.0.1",
        study_instance_uid="1.2.826.0.1.3680043.10.543.1",
        patient_id="PAT-42",
    )


def received(line: bytes) -> tuple[re.Match[bytes], ET.Element]:
    found = _RECEIVED.fullmatch(line)
    assert found is not None, line[:300]
    return found, ET.fromstring(found["xml"])


async def deliver(sender: SyslogSender, *events: AuditEvent) -> None:
    for event in events:
        sender.send(event)
    assert await sender.flush(10)
    await sender.close()


async def test_udp_delivery(collector: Collector) -> None:
    sender = SyslogSender(parse_syslog_url(collector.udp_url), SOURCE)
    await deliver(sender, stored(), stored(EventOutcome.MINOR_FAILURE))
    lines = collector.wait_for(2)
    assert sender.sent == 2 and sender.dropped == 0
    (first, xml), (second, _) = (received(line) for line in lines)
    assert first["input"] == b"imudp"
    assert (first["pri"], second["pri"]) == (b"85", b"84")  # authpriv.notice, .warning
    assert first["msgid"] == b"IHE+RFC-3881"
    assert first["app"] == b"pacs"
    assert xml.tag == "AuditMessage"
    event_id = xml.find("EventIdentification/EventID")
    assert event_id is not None and event_id.attrib["csd-code"] == "110104"
    study = xml.find("ParticipantObjectIdentification[@ParticipantObjectTypeCode='2']")
    assert study is not None
    assert study.attrib["ParticipantObjectID"] == "1.2.826.0.1.3680043.10.543.1"
    patient = xml.find("ParticipantObjectIdentification[@ParticipantObjectTypeCode='1']")
    assert patient is not None and patient.attrib["ParticipantObjectID"] == "PAT-42"


async def test_tls_delivery_checks_the_collector_certificate(collector: Collector) -> None:
    sender = SyslogSender(
        parse_syslog_url(collector.tls_url), SOURCE, ca_file=str(collector.pki.ca)
    )
    many = [stored() for _ in range(20)]
    await deliver(sender, *many)
    lines = collector.wait_for(20)
    assert len(lines) == 20  # octet-counted frames split where they should
    for line in lines:
        found, xml = received(line)
        assert found["input"] == b"imtcp"
        assert xml.find("EventIdentification/EventID") is not None


async def test_an_untrusted_collector_gets_nothing_and_the_sender_does_not_block(
    collector: Collector, tmp_path: Path
) -> None:
    other_ca = make_pki(tmp_path / "other").ca
    sender = SyslogSender(
        parse_syslog_url(collector.tls_url), SOURCE, ca_file=str(other_ca), max_backoff=0.2
    )
    started = time.monotonic()
    for _ in range(5):
        sender.send(stored())
    assert time.monotonic() - started < 0.05  # queued, not sent inline
    assert not await sender.flush(1.5)  # kept, retried, never delivered
    await sender.close(0.1)
    assert sender.sent == 0
    assert collector.lines() == []


async def test_a_collector_that_starts_late_still_gets_the_events(tmp_path: Path) -> None:
    port = free_port()
    pki = make_pki(tmp_path / "pki")
    sender = SyslogSender(
        parse_syslog_url(f"tls://localhost:{port}"), SOURCE, ca_file=str(pki.ca), max_backoff=0.5
    )
    sender.send(stored())
    sender.send(stored(EventOutcome.SERIOUS_FAILURE))
    await asyncio.sleep(1)  # a few refused connections
    assert sender.sent == 0
    with running_rsyslog(tmp_path / "rsyslog", tls_port=port, pki=pki) as late:
        assert await sender.flush(15)
        lines = late.wait_for(2)
    await sender.close()
    assert [received(line)[0]["pri"] for line in lines] == [b"85", b"83"]


def test_pacs_serve_sends_its_events_to_the_configured_collector(
    collector: Collector, tmp_path: Path
) -> None:
    """Settings to collector: reading the audit trail is itself audited (110101)."""
    env = {"PACS_AUDIT_SYSLOG": collector.tls_url, "PACS_AUDIT_SYSLOG_CA": str(collector.pki.ca)}
    with running_server(tmp_path / "archive", env=env) as url:
        answer = httpx.get(f"{url}/dicomweb/audit", params={"patient": "PAT-42"}, timeout=30)
        assert answer.status_code == 200, answer.text
        [line] = collector.wait_for(1)
    found, xml = received(line)
    assert found["input"] == b"imtcp"
    event_id = xml.find("EventIdentification/EventID")
    assert event_id is not None
    assert (event_id.attrib["csd-code"], event_id.attrib["originalText"]) == (
        "110101",
        "Audit Log Used",
    )
    log = xml.find("ParticipantObjectIdentification")
    assert log is not None and log.attrib["ParticipantObjectID"] == "/dicomweb/audit"
    # The search named a patient: that stays out of the server's log.
    assert "PAT-42" not in (tmp_path / "archive" / "server.log").read_text()


async def test_a_full_queue_drops_counts_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens: the queue fills, the rest is dropped and counted, and the first
    drop is logged (then at most once a minute)."""
    target = parse_syslog_url(f"tls://localhost:{free_port()}")
    sender = SyslogSender(target, SOURCE, ca_file=str(make_pki(tmp_path).ca), queue_size=2)
    with caplog.at_level(logging.WARNING, logger="app.audit.syslog"):
        for _ in range(10):
            sender.send(stored())
    assert sender.dropped == 8
    drops = [r.getMessage() for r in caplog.records if "queue full" in r.getMessage()]
    assert drops == [f"audit syslog: queue full, events not sent to {target} (1 dropped so far)"]
    await sender.close(0.1)
