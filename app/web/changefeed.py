"""The change feed: `GET /dicomweb/changefeed` and `/changefeed/latest` (also per tenant),
modelled on the change feed of Microsoft's DICOM service: JSON entries with Sequence,
StudyInstanceUid, SeriesInstanceUid, SopInstanceUid, Action, Timestamp, State and, unless
`includemetadata=false`, the instance's Metadata (DICOM JSON) while it is the current
version. `offset` is the last sequence the consumer has seen (entries above it come back);
sequences start at 1 and have no gaps, so it is also the number of entries to skip.
`wait=N` holds the request up to N seconds until an entry arrives (long polling).

Needs the read permission; a read is audited as a query.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from app.audit.event import EventOutcome
from app.dicom.instance import BULK_BASE
from app.services.archive import Archive
from app.services.errors import BadRequest, NotAcceptable
from app.services.ports import Change
from app.web.access import request_access
from app.web.auditing import record_query
from app.web.negotiation import parse_accept
from app.web.params import query_int
from app.web.urls import base_url, instance_url

JSON = "application/json"
_JSON_TYPES = ("*/*", "application/*", "application/json")
_FEED_PARAMETERS = ("offset", "limit", "includemetadata", "wait")
_LATEST_PARAMETERS = ("includemetadata",)
_BOOLEANS = {"true": True, "false": False}
# The largest sequence a client may name (PostgreSQL's bigint).
_MAX_SEQUENCE = 2**63 - 1


def _single(request: Request, known: tuple[str, ...]) -> dict[str, str]:
    """The query parameters, each at most once, all known."""
    found: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in known:
            raise BadRequest(
                f"unknown query parameter {name!r}; expected one of: {', '.join(known)}"
            )
        if name in found:
            raise BadRequest(f"query parameter {name!r} given more than once")
        found[name] = value
    return found


def _bounded(params: dict[str, str], name: str, low: int, high: int, setting: str) -> int | None:
    try:
        return query_int(params, name, low, high)
    except BadRequest as exc:
        raise BadRequest(f"{exc} ({setting})") from None


def _include_metadata(params: dict[str, str]) -> bool:
    raw = params.get("includemetadata", "true")
    found = _BOOLEANS.get(raw.strip().lower())
    if found is None:
        raise BadRequest(f"invalid includemetadata={raw!r}: expected true or false")
    return found


def _check_accept(request: Request) -> None:
    accept = parse_accept(request.headers.get("accept"))
    if not any(r.media_type in _JSON_TYPES for r in accept):
        raise NotAcceptable("the change feed is available as application/json only")


def _timestamp(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _entry(change: Change, base: str, metadata: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "Sequence": change.sequence,
        "StudyInstanceUid": change.study_instance_uid,
        "SeriesInstanceUid": change.series_instance_uid,
        "SopInstanceUid": change.sop_instance_uid,
        "Action": str(change.action),
        "Timestamp": _timestamp(change.timestamp),
        "State": str(change.state),
    }
    if metadata:
        text = change.metadata
        if text is not None and change.series_instance_uid and change.sop_instance_uid:
            # BulkDataURIs as WADO-RS metadata gives them: under the instance's URL.
            url = instance_url(
                base, change.study_instance_uid, change.series_instance_uid, change.sop_instance_uid
            )
            text = text.replace(BULK_BASE.encode(), url.encode())
        entry["Metadata"] = None if text is None else orjson.Fragment(text)
    return entry


async def read_feed(request: Request) -> Response:
    archive: Archive = request.app.state.archive
    settings = archive.settings
    access = request_access(request)
    _check_accept(request)
    try:
        params = _single(request, _FEED_PARAMETERS)
        offset = query_int(params, "offset", 0, _MAX_SEQUENCE) or 0
        limit = _bounded(
            params, "limit", 1, settings.changefeed_max_limit, "PACS_CHANGEFEED_MAX_LIMIT"
        )
        wait = _bounded(params, "wait", 0, settings.changefeed_max_wait, "PACS_CHANGEFEED_MAX_WAIT")
        metadata = _include_metadata(params)
    except BadRequest as exc:
        record_query(request, access, None, EventOutcome.MINOR_FAILURE, str(exc))
        raise
    found = await archive.changefeed.read(
        access,
        offset,
        settings.changefeed_default_limit if limit is None else limit,
        metadata=metadata,
        wait=wait or 0,
    )
    record_query(request, access, None)
    base = base_url(request)
    body = orjson.dumps([_entry(change, base, metadata) for change in found])
    return Response(body, media_type=JSON)


async def read_latest(request: Request) -> Response:
    """The last entry; `{"Sequence": 0}` while the feed is empty, so that a consumer that
    starts from now reads on from the Sequence it gets either way."""
    archive: Archive = request.app.state.archive
    access = request_access(request)
    _check_accept(request)
    try:
        metadata = _include_metadata(_single(request, _LATEST_PARAMETERS))
    except BadRequest as exc:
        record_query(request, access, None, EventOutcome.MINOR_FAILURE, str(exc))
        raise
    latest = await archive.changefeed.latest(access, metadata=metadata)
    record_query(request, access, None)
    entry = {"Sequence": 0} if latest is None else _entry(latest, base_url(request), metadata)
    return Response(orjson.dumps(entry), media_type=JSON)
