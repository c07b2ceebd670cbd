"""DELETE of a study, series or instance (issue 12, Delete; as the managed DICOM services
and dcm4chee-arc offer it, PS3.18 has no such transaction): 204 once the rows are gone,
404 when nothing is stored there, 403 without the `delete` permission (before any lookup,
so it never tells whether the object exists)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from app.audit.event import AuditAction
from app.auth.principal import Permission
from app.services.archive import Archive
from app.web.access import request_access
from app.web.auditing import request_event
from app.web.errors import path_uids


async def delete_resource(request: Request) -> Response:
    archive: Archive = request.app.state.archive
    access = request_access(request)
    access.require(Permission.DELETE)
    study, series, instance = path_uids(request)
    assert study is not None  # every DELETE route names a study
    # PS3.15 A.5.3.3: instances deleted are "DICOM Instances Accessed" with action D.
    event = request_event(request, access, AuditAction.INSTANCES_ACCESSED)
    await archive.delete.delete(access, study, series, instance, event=event)
    return Response(status_code=204)
