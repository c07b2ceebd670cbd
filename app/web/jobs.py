"""Forwarding jobs for administrators (app/services/forwarding.py): `GET /dicomweb/jobs`
lists a tenant's jobs, newest first (`?state=queued|running|done|failed`, `?limit=`), and
`POST /dicomweb/jobs/{id}/retry` queues a failed job again. Per tenant under
`/dicomweb/tenants/{tenant}/`. Permission admin.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from app.auth.principal import Access, Permission
from app.digits import parse_int
from app.services.archive import Archive
from app.services.errors import BadRequest, NotFound
from app.services.ports import Job, JobState
from app.web.access import request_access
from app.web.params import query_int

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_PARAMETERS = ("state", "limit")


def job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "rule": job.rule,
        "destination": job.destination,
        "state": job.state.value,
        "priority": job.priority,
        "attempts": job.attempts,
        "nextAttemptAt": _time(job.next_attempt_at) if job.state == JobState.QUEUED else None,
        "lastError": job.last_error,
        "sequence": job.change_seq,
        "studyInstanceUID": job.study_instance_uid,
        "seriesInstanceUID": job.series_instance_uid,
        "sopInstanceUID": job.sop_instance_uid,
        "created": _time(job.created_at),
        "updated": _time(job.updated_at),
    }


def _time(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _admin(request: Request) -> Access:
    access = request_access(request)
    # Refused before anything about the request is looked at.
    access.require(Permission.ADMIN)
    return access


async def list_jobs(request: Request) -> Response:
    access = _admin(request)
    params: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in _PARAMETERS:
            raise BadRequest(f"unknown query parameter {name!r}; expected state or limit")
        if name in params:
            raise BadRequest(f"query parameter {name!r} given more than once")
        params[name] = value
    state = None
    if "state" in params:
        try:
            state = JobState(params["state"])
        except ValueError:
            known = ", ".join(s.value for s in JobState)
            raise BadRequest(f"state={params['state']!r} is not one of {known}") from None
    limit = query_int(params, "limit", 1, MAX_LIMIT) or DEFAULT_LIMIT
    archive: Archive = request.app.state.archive
    jobs = await archive.index.jobs(access.tenant, state, limit)
    return Response(orjson.dumps([job_json(j) for j in jobs]), media_type="application/json")


async def retry_job(request: Request) -> Response:
    access = _admin(request)
    raw = request.path_params["job"]
    try:
        job_id = parse_int(raw, 1, 2**62)
    except ValueError:
        raise BadRequest(f"job id {raw!r} is not a positive integer") from None
    archive: Archive = request.app.state.archive
    job = await archive.index.retry_job(access.tenant, job_id)
    if job is None:
        raise NotFound(f"no failed job {job_id} in tenant {access.tenant!r}")
    return Response(orjson.dumps(job_json(job)), media_type="application/json")
