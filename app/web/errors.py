"""Error mapping: domain errors and bad requests become statuses with a clear message."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from app.auth.principal import Forbidden, UnknownTenant
from app.dicom.multipart import MultipartError
from app.dicom.uid import is_valid_uid
from app.query.qido import QueryError
from app.services.errors import (
    ArchiveError,
    BadRequest,
    Conflict,
    NotAcceptable,
    NotFound,
    Overloaded,
    StorageInconsistent,
    Unsupported,
)
from app.web.auditing import record_forbidden
from app.web.ranges import RangeNotSatisfiable

log = logging.getLogger(__name__)


class UnsupportedMediaType(ArchiveError):
    pass


class PayloadTooLarge(ArchiveError):
    pass


_STATUS: dict[type[Exception], int] = {
    UnknownTenant: 400,
    UnsupportedMediaType: 415,
    PayloadTooLarge: 413,
    StorageInconsistent: 500,
    NotFound: 404,
    NotAcceptable: 406,
    Unsupported: 501,
    BadRequest: 400,
    Conflict: 409,
    QueryError: 400,
    MultipartError: 400,
}


REALM = "pacs"
# RFC 6750 3: error_description is %x20-21 / %x23-5B / %x5D-7E.
_DESCRIPTION_CHARACTERS = frozenset(chr(c) for c in range(0x20, 0x7F)) - {'"', "\\"}


def challenge(code: str | None = None, description: str | None = None) -> str:
    """A `WWW-Authenticate: Bearer` challenge (RFC 6750 section 3)."""
    params = [f'realm="{REALM}"']
    if code:
        params.append(f'error="{code}"')
    if description:
        text = "".join(
            c if c in _DESCRIPTION_CHARACTERS else "'" if c == '"' else "?" for c in description
        )
        params.append(f'error_description="{text}"')
    return "Bearer " + ", ".join(params)


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse({"status": status, "error": message}, status_code=status, headers=headers)


async def handle_known(request: Request, exc: Exception) -> Response:
    if isinstance(exc, Forbidden):
        # RFC 6750 3.1: a valid token without the permission the request needs.
        challenge = 'Bearer realm="pacs", error="insufficient_scope"'
        record_forbidden(request, str(exc))
        return error_response(403, str(exc), {"WWW-Authenticate": challenge})
    if isinstance(exc, Overloaded):
        log.warning("%s %s: 503 %s", request.method, request.url.path, exc)
        return error_response(503, str(exc), {"Retry-After": str(exc.retry_after)})
    for kind, status in _STATUS.items():
        if isinstance(exc, kind):
            if status == 500:  # our fault: the index and the stored files disagree
                log.error("%s %s: %s", request.method, request.url.path, exc)
            elif status >= 500:
                # 501: a request for what this archive does not do (e.g. rendering an object
                # without pixel data) is the client's choice, not a fault to page anyone for.
                log.info("%s %s: %d %s", request.method, request.url.path, status, exc)
            return error_response(status, str(exc))
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal error; see the server log")


async def handle_disconnect(request: Request, exc: Exception) -> Response:
    """The client closed the connection, or sent no body bytes for PACS_HTTP_BODY_TIMEOUT
    seconds (app/web/http_protocol.py, which answered 408): its business, not a fault."""
    log.info("%s %s: the client went away before its body ended", request.method, request.url.path)
    return error_response(400, "the request body ended early")  # nobody reads it


async def handle_range(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RangeNotSatisfiable)
    total = getattr(exc, "total", None)
    headers = {"Content-Range": f"bytes */{total}"} if total is not None else None
    return error_response(416, str(exc), headers)


async def handle_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = exc.detail or "error"
    if exc.status_code == 404:
        message = f"no such resource: {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    return error_response(exc.status_code, message, exc.headers)  # keeps Allow on 405


EXCEPTION_HANDLERS = {
    HTTPException: handle_http,
    ArchiveError: handle_known,
    QueryError: handle_known,
    MultipartError: handle_known,
    RangeNotSatisfiable: handle_range,
    ClientDisconnect: handle_disconnect,
    Exception: handle_known,
}

_UID_NAMES = {
    "study": "StudyInstanceUID",
    "series": "SeriesInstanceUID",
    "instance": "SOPInstanceUID",
}


def path_uids(request: Request) -> tuple[str | None, str | None, str | None]:
    """Study, series and instance UIDs of the path, validated (400 when malformed)."""
    found: list[str | None] = []
    for name in ("study", "series", "instance"):
        value = request.path_params.get(name)
        if value is not None and not is_valid_uid(value):
            raise BadRequest(f"invalid {_UID_NAMES[name]} in the URL: {value!r}")
        found.append(value)
    return found[0], found[1], found[2]
