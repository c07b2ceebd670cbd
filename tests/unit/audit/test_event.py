"""The audit event model."""

from __future__ import annotations

from app.audit.event import CUT, MAX_TEXT, AuditAction, AuditEvent, AuditProtocol


def test_caller_chosen_text_is_bounded() -> None:
    """A 60 KB path without a token was stored whole (review): any caller could write rows and
    syslog messages of any size."""
    long = "/dicomweb/" + "x" * 60_000
    event = AuditEvent(
        AuditAction.USER_AUTHENTICATION,
        AuditProtocol.DICOMWEB,
        called=long,
        query="PatientName=" + "A" * 10_000,
        reason="r" * 5000,
    )
    for value in (event.called, event.query, event.reason):
        assert value is not None and len(value) == MAX_TEXT and value.endswith(CUT)
    assert event.called is not None and event.called.startswith("/dicomweb/xxx")
    short = AuditEvent(AuditAction.QUERY, AuditProtocol.DICOMWEB, called="/dicomweb/studies")
    assert short.called == "/dicomweb/studies"
