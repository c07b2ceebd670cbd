"""The path an audit event records (`called`), read from the scope without building the URL."""

from __future__ import annotations

import pytest
from starlette.requests import HTTPConnection

from app.audit.event import AuditAction
from app.auth.principal import DEFAULT_TENANT, Access, anonymous
from app.web.auditing import request_event, request_path


def _connection(path: str) -> HTTPConnection:
    scope = {
        "type": "http",
        "scheme": "http",
        "server": ("127.0.0.1", 8080),
        "path": path,
        "query_string": b"",
        "headers": [(b"host", b"pacs.local:8080")],
    }
    return HTTPConnection(scope)


@pytest.mark.parametrize(
    "path",
    [
        "/dicomweb/studies/1.2.3/series/4.5/instances/6.7/rendered",
        "/dicomweb/tenants/acme/studies/1.2/metadata",
        "/dicomweb/studies/1.2?3",  # %3F in the request line
        "/dicomweb/studies/a#b",
        "/dicomweb/studies/a\\b",
        "/dicomweb/studies/a\tb\r\nc",
        "//dicomweb/studies",
        "/dicomweb/studies/é%20",
    ],
)
def test_the_audited_path_is_the_urls(path: str) -> None:
    assert request_path(_connection(path)) == _connection(path).url.path


def test_an_audited_read_builds_no_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: every audited read built `request.url` (the Host header and the whole
    URL parsed again) for the path alone."""

    def no_url(self: HTTPConnection) -> None:
        raise AssertionError("request.url built")

    monkeypatch.setattr(HTTPConnection, "url", property(no_url))
    path = "/dicomweb/studies/1.2.3/series/4.5/instances/6.7/rendered"
    access = Access(anonymous("192.0.2.1"), DEFAULT_TENANT)
    event = request_event(_connection(path), access, AuditAction.INSTANCES_ACCESSED)
    assert event.called == path
