"""WADO-URI (PS3.18 9): `/wado?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..`.

Legacy viewers and EHR links name one instance in the query string. It comes back as the
PS3.10 file (contentType=application/dicom, in the stored syntax or `transferSyntax`) or
rendered (image/jpeg, the default for images, image/png or image/gif) with the URI
service's own parameters: frameNumber, windowCenter/windowWidth, rows/columns, region,
annotation and imageQuality.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response

from app.audit.event import AuditAction
from app.auth.principal import Access, Permission
from app.dicom.uid import is_valid_uid
from app.digits import INT32, NumberError, parse_decimal
from app.services.archive import Archive
from app.services.errors import BadRequest, NotAcceptable, Unsupported
from app.services.imaging import RenderOptions, Viewport, Window, window_problem
from app.services.plan import DICOM, uri_media_type
from app.services.ports import StoredInstance
from app.web.access import request_access
from app.web.auditing import audited_read
from app.web.negotiation import parse_accept
from app.web.params import query_int
from app.web.render_params import RenderParamError, check_output_size, parse_annotation
from app.web.rendered import render_instance
from app.web.wado import plan_response

# Accepted and ignored without a warning: they change nothing we could serve differently.
_IGNORED = frozenset({"charset", "presentationUID", "presentationSeriesUID"})
_MAX_NAMES, _MAX_NAME = 10, 64  # unknown parameter names listed in the Warning header
_KNOWN = (
    frozenset(
        {
            "requestType",
            "studyUID",
            "seriesUID",
            "objectUID",
            "contentType",
            "transferSyntax",
            "frameNumber",
            "windowCenter",
            "windowWidth",
            "rows",
            "columns",
            "region",
            "annotation",
            "imageQuality",
            "anonymize",
        }
    )
    | _IGNORED
)


def _uid(query: Mapping[str, str], name: str) -> str:
    value = query.get(name, "").strip()
    if not value:
        raise BadRequest(f"WADO-URI request without {name}")
    if not is_valid_uid(value):
        raise BadRequest(f"invalid {name} {value!r}: not a DICOM UID")
    return value


def _float(query: Mapping[str, str], name: str) -> float | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        return parse_decimal(raw)
    except NumberError:
        raise BadRequest(f"invalid {name}={raw!r}: expected a number") from None


def _content_type(query: Mapping[str, str]) -> str:
    """The first listed content type we can produce (PS3.18 9.1.2.1.6: a list, by
    preference); image/jpeg when none is given."""
    media_type = uri_media_type(parse_accept(query.get("contentType")))
    if media_type is not None:
        return media_type
    raise NotAcceptable(
        f"contentType {query.get('contentType')!r} cannot be served: use application/dicom, "
        "image/jpeg, image/png or image/gif"
    )


def _window(query: Mapping[str, str]) -> Window | None:
    center, width = _float(query, "windowCenter"), _float(query, "windowWidth")
    if (center is None) != (width is None):
        raise BadRequest("windowCenter and windowWidth go together: give both or neither")
    if center is None or width is None:
        return None
    window = Window(center, width)
    problem = window_problem(window)
    if problem is not None:
        raise BadRequest(f"invalid windowCenter/windowWidth: {problem}")
    return window


def _region(query: Mapping[str, str]) -> tuple[float, float, float, float] | None:
    raw = query.get("region")
    if raw is None:
        return None
    try:
        x1, y1, x2, y2 = (parse_decimal(v) for v in raw.split(","))
    except ValueError:  # NumberError too
        raise BadRequest(
            f"invalid region={raw!r}: expected x1,y1,x2,y2 as fractions from 0.0 to 1.0"
        ) from None
    if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
        raise BadRequest(f"invalid region={raw!r}: need 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1")
    return x1, y1, x2, y2


def _annotation(query: Mapping[str, str]) -> frozenset[str]:
    raw = query.get("annotation")
    if not raw:
        return frozenset()
    try:
        return parse_annotation(raw)
    except RenderParamError as exc:
        raise BadRequest(str(exc)) from exc


async def retrieve(request: Request) -> Response:
    archive: Archive = request.app.state.archive
    access = request_access(request)
    # Before the parameters are judged: a caller who may not read learns nothing more.
    access.require(Permission.READ)
    query = request.query_params
    if query.get("requestType") != "WADO":
        raise BadRequest("requestType=WADO is required")
    study, series, sop = (_uid(query, n) for n in ("studyUID", "seriesUID", "objectUID"))
    if query.get("anonymize", "").lower() == "yes":
        raise Unsupported("anonymize=yes is not supported: the archive returns data as stored")
    media_type = _content_type(query)
    action = (
        AuditAction.INSTANCES_TRANSFERRED if media_type == DICOM else AuditAction.INSTANCES_ACCESSED
    )
    lookup = archive.retrieve.instances(access, study, series, sop)
    instances = (await audited_read(request, access, action, study, lookup))[:1]
    if media_type == DICOM:
        syntax = query.get("transferSyntax")
        if syntax is not None and not is_valid_uid(syntax):
            raise BadRequest(f"invalid transferSyntax {syntax!r}: not a DICOM UID")
        accept = f"{DICOM}; transfer-syntax={syntax}" if syntax else DICOM
        response = await plan_response(request, archive, access, instances[0], parse_accept(accept))
    else:
        response = await _rendered(archive, access, query, media_type, instances[0])
    unknown = sorted(set(query) - _KNOWN)
    if unknown:
        # Links carry extra parameters (cache busters, vendor options): served, but said.
        response.headers["Warning"] = (
            f'299 {request.url.hostname or "pacs"}: "The following WADO-URI parameters '
            f'were ignored: {_header_text(unknown)}"'
        )
    return response


def _header_text(names: list[str]) -> str:
    """Callers' parameter names as they can stand in a header's quoted-string: the first
    few, cut short, escaped to printable ASCII (a non-Latin-1 name was a 500, a control
    character one an answer the server could not send)."""
    shown = [
        name[:_MAX_NAME].encode("unicode_escape").decode("ascii").replace('"', '\\"')
        for name in names[:_MAX_NAMES]
    ]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


async def _rendered(
    archive: Archive,
    access: Access,
    query: Mapping[str, str],
    media_type: str,
    instance: StoredInstance,
) -> Response:
    max_pixels = archive.settings.max_rendered_pixels
    rows, columns = (
        query_int(query, "rows", 1, max_pixels),
        query_int(query, "columns", 1, max_pixels),
    )
    quality = query_int(query, "imageQuality", 1, 100)
    frame = query_int(query, "frameNumber", 1, INT32[1])
    region = _region(query)
    viewport: Viewport | None = None
    if rows or columns or region:
        source = await archive.imaging.open(access, instance)  # for its size
        height = int(source.header.get("Rows") or 1)
        width = int(source.header.get("Columns") or 1)
        sx, sy, sw, sh = 0, 0, width, height
        if region:
            x1, y1, x2, y2 = region
            sx, sy = round(x1 * width), round(y1 * height)
            sw, sh = max(1, round((x2 - x1) * width)), max(1, round((y2 - y1) * height))
        # One of rows/columns alone scales the other with the aspect ratio (PS3.18 9.1.2.1.9).
        vw = columns or (round(sw * rows / sh) if rows else sw)
        vh = rows or (round(sh * columns / sw) if columns else sh)
        try:  # one limit for every rendering route: the output is at most vw x vh
            check_output_size("rows x columns", vw, vh, max_pixels)
        except RenderParamError as exc:
            raise BadRequest(str(exc)) from None
        viewport = Viewport(vw, vh, sx, sy, sw, sh)
    options = RenderOptions(
        media_type=media_type,
        quality=quality,
        window=_window(query),
        viewport=viewport,
        annotation=_annotation(query),
    )
    if frame is not None:
        data = await archive.imaging.render_stored(access, instance, options, [frame])
    else:
        data = await render_instance(archive, access, instance, options)
    return Response(data, media_type=media_type)
