"""RFC 5424 audit messages and their RFC 5425 framing; the collector URL setting."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from app.audit.event import AuditAction, AuditEvent, AuditProtocol, EventOutcome
from app.audit.syslog import (
    SyslogTarget,
    octet_counted,
    parse_syslog_url,
    syslog_message,
)

WHEN = datetime(2024, 3, 1, 8, 30, 15, 123456, tzinfo=UTC)
XML = '<?xml version="1.0" encoding="UTF-8"?><AuditMessage>é</AuditMessage>'.encode()

# RFC 5424 section 6: HEADER SP STRUCTURED-DATA [SP MSG], MSG starting with a BOM.
_SYSLOG = re.compile(
    rb"<(?P<pri>\d{1,3})>1 (?P<timestamp>\S+) (?P<hostname>\S+) (?P<app>\S+) "
    rb"(?P<procid>\S+) (?P<msgid>\S+) - \xef\xbb\xbf(?P<msg>.*)",
    re.DOTALL,
)


def event(outcome: EventOutcome = EventOutcome.SUCCESS) -> AuditEvent:
    return AuditEvent(AuditAction.QUERY, AuditProtocol.DICOMWEB, outcome=outcome, when=WHEN)


@pytest.mark.parametrize(
    ("outcome", "pri"),
    [
        # facility authpriv (10) * 8 + severity
        (EventOutcome.SUCCESS, 85),  # notice
        (EventOutcome.MINOR_FAILURE, 84),  # warning
        (EventOutcome.SERIOUS_FAILURE, 83),  # error
        (EventOutcome.MAJOR_FAILURE, 82),  # critical
    ],
)
def test_priority_follows_the_outcome(outcome: EventOutcome, pri: int) -> None:
    message = syslog_message(event(outcome), XML, hostname="archive-1")
    found = _SYSLOG.fullmatch(message)
    assert found is not None
    assert int(found["pri"]) == pri


def test_header_and_message() -> None:
    message = syslog_message(event(), XML, hostname="archive-1", app_name="pacs", procid="42")
    found = _SYSLOG.fullmatch(message)
    assert found is not None
    assert found["timestamp"] == b"2024-03-01T08:30:15.123Z"
    assert (found["hostname"], found["app"], found["procid"]) == (b"archive-1", b"pacs", b"42")
    assert found["msgid"] == b"IHE+RFC-3881"
    assert found["msg"] == XML  # UTF-8, unchanged


def test_header_fields_are_printable_ascii_without_spaces() -> None:
    message = syslog_message(event(), XML, hostname="my host é", app_name="", procid="")
    found = _SYSLOG.fullmatch(message)
    assert found is not None
    assert (found["hostname"], found["app"], found["procid"]) == (b"myhost", b"-", b"-")
    long = syslog_message(event(), XML, hostname="h" * 300, app_name="a" * 60)
    found = _SYSLOG.fullmatch(long)
    assert found is not None
    assert len(found["hostname"]) == 255 and len(found["app"]) == 48


def test_octet_counting_frames_the_byte_length() -> None:
    message = syslog_message(event(), XML, hostname="h")
    framed = octet_counted(message)
    length, _, rest = framed.partition(b" ")
    assert int(length) == len(message) == len(rest)
    assert rest == message
    # Two frames back to back split apart again by their lengths alone.
    stream = octet_counted(b"one") + octet_counted("zwei é".encode())
    assert stream == b"3 one7 zwei \xc3\xa9"  # bytes, not characters


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("udp://collector", SyslogTarget("udp", "collector", 514)),
        ("udp://10.0.0.1:1514", SyslogTarget("udp", "10.0.0.1", 1514)),
        ("tls://collector.example.org", SyslogTarget("tls", "collector.example.org", 6514)),
        ("tls://[::1]:6514/", SyslogTarget("tls", "::1", 6514)),
    ],
)
def test_collector_urls(url: str, target: SyslogTarget) -> None:
    assert parse_syslog_url(url) == target


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("collector:514", "expected udp://host:port or tls://host:port"),
        ("tcp://collector:514", "expected udp://host:port or tls://host:port"),
        ("udp://:514", "expected udp://host:port or tls://host:port"),
        ("tls://collector:http", "invalid port"),
        ("tls://collector:99999", "invalid port"),
        ("udp://collector/path", "unexpected path"),
    ],
)
def test_bad_collector_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"PACS_AUDIT_SYSLOG: {message}"):
        parse_syslog_url(url)
