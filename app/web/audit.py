"""The audit trail for administrators: `GET /dicomweb/audit` (and per tenant, under
`/dicomweb/tenants/{tenant}/audit`), searched by patient, user, study and time.

Needs the admin permission. Answers JSON, newest first; reading the trail is itself
audited (Audit Log Used, PS3.15 A.5.3.1).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from app.audit.event import AuditAction, AuditEvent, AuditProtocol
from app.audit.query import AuditQuery
from app.auth.principal import Permission
from app.dicom.uid import is_valid_uid
from app.services.archive import Archive
from app.services.errors import BadRequest, NotAcceptable
from app.web.access import request_access
from app.web.negotiation import parse_accept
from app.web.params import query_int

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_PARAMETERS = ("patient", "user", "study", "since", "until", "limit", "offset")
_JSON_TYPES = ("*/*", "application/*", "application/json")


def _single(request: Request) -> dict[str, str]:
    """The query parameters, each at most once, all known."""
    found: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in _PARAMETERS:
            raise BadRequest(
                f"unknown query parameter {name!r}; expected one of: {', '.join(_PARAMETERS)}"
            )
        if name in found:
            raise BadRequest(f"query parameter {name!r} given more than once")
        found[name] = value
    return found


def _time(name: str, text: str) -> datetime:
    """An ISO 8601 date or date-time; without a time zone it is UTC."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadRequest(
            f"{name}={text!r} is not an ISO 8601 date or date-time "
            "(e.g. 2024-03-01 or 2024-03-01T08:00:00Z)"
        ) from None
    try:
        # Compared and stored in UTC: near the ends of the calendar that can overflow.
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:
        raise BadRequest(f"{name}={text!r} is out of range once converted to UTC") from None


def _text(name: str, text: str) -> str:
    if not text.strip():
        raise BadRequest(f"{name} is empty")
    # No stored patient ID or user holds one, and PostgreSQL text cannot hold NUL.
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise BadRequest(f"{name} contains a control character")
    return text


def event_json(event: AuditEvent) -> dict[str, Any]:
    """An event as the admin API shows it."""
    return {
        "time": event.when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "tenant": event.tenant,
        "action": event.action.value,
        "event": event.action.event_id.meaning,
        "eventActionCode": event.effective_action_code.value,
        "eventType": event.event_type.code.meaning if event.event_type else None,
        "outcome": int(event.outcome),
        "reason": event.reason or None,
        "protocol": event.protocol.value,
        "subject": event.subject,
        "client": event.client,
        "aeTitle": event.ae_title,
        "address": event.address,
        "called": event.called,
        "destination": event.destination,
        "studyInstanceUID": event.study_instance_uid,
        "seriesInstanceUIDs": list(event.series_instance_uids),
        "sopInstanceUIDs": list(event.sop_instance_uids),
        "patientID": event.patient_id,
        "query": event.query,
    }


def audit_query(request: Request) -> AuditQuery:
    """The search the query parameters ask for; BadRequest for any bad one."""
    params = _single(request)
    study = params.get("study")
    if study is not None and not is_valid_uid(study):
        raise BadRequest(f"study={study!r} is not a Study Instance UID")
    since = _time("since", params["since"]) if "since" in params else None
    until = _time("until", params["until"]) if "until" in params else None
    if since and until and since > until:
        raise BadRequest("since is later than until")
    return AuditQuery(
        patient_id=_text("patient", params["patient"]) if "patient" in params else None,
        subject=_text("user", params["user"]) if "user" in params else None,
        study=study,
        since=since,
        until=until,
        limit=_or(query_int(params, "limit", 1, MAX_LIMIT), DEFAULT_LIMIT),
        offset=_or(query_int(params, "offset", 0, 10**9), 0),
    )


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


async def search_audit(request: Request) -> Response:
    access = request_access(request)
    # Refuse a caller without the permission before saying anything about the request.
    access.require(Permission.ADMIN)
    accept = parse_accept(request.headers.get("accept"))
    if not any(r.media_type in _JSON_TYPES for r in accept):
        raise NotAcceptable("the audit trail is available as application/json only")
    archive: Archive = request.app.state.archive
    events = await archive.audit.search(access, audit_query(request))
    archive.audit.record(
        replace(
            AuditEvent.of(
                access, AuditAction.AUDIT_LOG_USED, AuditProtocol.DICOMWEB, called=request.url.path
            ),
            query=request.url.query or None,
        )
    )
    body = orjson.dumps([event_json(e) for e in events])
    return Response(body, media_type="application/json")
