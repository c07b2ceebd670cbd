"""QIDO-RS: Search (PS3.18 10.6)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from app.audit.event import EventOutcome
from app.dicom.json import first_value
from app.dicom.levels import RETRIEVE_URL, UNIQUE_KEYS, Level
from app.query.qido import QueryError, parse_qido
from app.services.archive import Archive
from app.services.errors import NotAcceptable
from app.web.access import request_access
from app.web.auditing import record_query
from app.web.errors import path_uids
from app.web.negotiation import parse_accept
from app.web.urls import base_url, instance_url, series_url, study_url

DICOM_JSON = "application/dicom+json"
_JSON_TYPES = ("*/*", "application/*", "application/dicom+json", "application/json")
_STUDY = UNIQUE_KEYS[Level.STUDY]
_SERIES = UNIQUE_KEYS[Level.SERIES]


def _retrieve_url(
    attrs: dict[str, Any], level: Level, base: str, scope: dict[int, str]
) -> str | None:
    # UIDs fixed by the URL are not repeated in the results, so take them from the path.
    study = first_value(attrs, _STUDY) or scope.get(_STUDY)
    series = first_value(attrs, _SERIES) or scope.get(_SERIES)
    sop = first_value(attrs, UNIQUE_KEYS[Level.INSTANCE])
    if level is Level.STUDY and study:
        return study_url(base, study)
    if level is Level.SERIES and study and series:
        return series_url(base, study, series)
    if level is Level.INSTANCE and study and series and sop:
        return instance_url(base, study, series, sop)
    return None


def _search(level: Level) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        archive: Archive = request.app.state.archive
        access = request_access(request)
        accept = parse_accept(request.headers.get("accept"))
        if not any(r.media_type in _JSON_TYPES for r in accept):
            raise NotAcceptable("search results are available as application/dicom+json only")
        study, series, _ = path_uids(request)
        scope: dict[int, str] = {}
        fixed: list[Level] = []
        if study:
            scope[_STUDY] = study
            fixed.append(Level.STUDY)
        if series:
            scope[_SERIES] = series
            fixed.append(Level.SERIES)
        try:
            query = parse_qido(
                list(request.query_params.multi_items()),
                level,
                scope=scope,
                default_limit=archive.settings.qido_default_limit,
                max_limit=archive.settings.qido_max_limit,
            )
            results = await archive.search.search(access, query, fixed)
        except QueryError as exc:
            record_query(request, access, study, EventOutcome.MINOR_FAILURE, str(exc))
            raise
        record_query(request, access, study)
        base = base_url(request)
        key = f"{RETRIEVE_URL:08X}"
        for attrs in results:
            url = _retrieve_url(attrs, level, base, scope)
            if url:
                attrs[key] = {"vr": "UR", "Value": [url]}
        headers = {}
        if query.ignored:
            names = ", ".join(query.ignored)
            headers["Warning"] = (
                f'299 {request.url.hostname or "pacs"}: "The following query parameters '
                f'were ignored: {names}"'
            )
        body = orjson.dumps([dict(sorted(a.items())) for a in results])
        return Response(body, media_type=DICOM_JSON, headers=headers)

    return endpoint


search_studies = _search(Level.STUDY)
search_series = _search(Level.SERIES)
search_instances = _search(Level.INSTANCE)
