"""How DICOMweb requests reach the audit trail: the one place that turns a request and its
`Access` into audit events (who, from where, on which path), so handlers stay one line.

Reads are handed to `AuditService.record`, which queues them: no index write on the
request's path. Stores are audited by the store service (in the index transaction), with
the event `store_event` makes here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence, Sized
from dataclasses import replace
from typing import TypeVar

from starlette.requests import HTTPConnection

from app.audit.event import (
    AuditAction,
    AuditEvent,
    AuditEventType,
    AuditProtocol,
    EventActionCode,
    EventOutcome,
)
from app.auth.principal import (
    DEFAULT_TENANT,
    Access,
    Forbidden,
    UnknownTenant,
    anonymous,
    check_tenant,
)
from app.services.archive import Archive
from app.services.audit import per_study
from app.services.errors import NotFound
from app.services.ports import StoredInstance, StoredMetadata
from app.web.access import request_access
from app.web.proxies import client_address
from app.web.urls import DICOMWEB_PREFIX, TENANTS_PATH

_TENANT_PREFIX = f"{DICOMWEB_PREFIX}{TENANTS_PATH}/"
Found = TypeVar("Found", bound=StoredInstance | StoredMetadata)
Chunk = TypeVar("Chunk", bound=Sized)  # bytes, or a file segment of a response


def _record(request: HTTPConnection, event: AuditEvent) -> None:
    # No archive only in an app whose lifespan has not run (a request refused up front).
    archive: Archive | None = getattr(request.app.state, "archive", None)
    if archive is not None:
        archive.audit.record(event)


def request_event(request: HTTPConnection, access: Access, action: AuditAction) -> AuditEvent:
    """An event for `request`: the caller of `access`, the path it asked for."""
    return AuditEvent.of(access, action, AuditProtocol.DICOMWEB, called=request_path(request))


# Characters Starlette's URL escapes or urlsplit drops from a path: with one of them the
# path in `request.url` differs from the scope's, and the trail keeps what it always kept.
_URL_CHANGES = frozenset("?#\\\t\r\n")


def request_path(request: HTTPConnection) -> str:
    """`request.url.path` without building the URL (which parses the Host header and the
    whole URL again) for the usual path, which it leaves as it is: every audited read needs
    the path, and the URL costs as much as the rest of the event."""
    path: str = request.scope["path"]
    if _URL_CHANGES.isdisjoint(path) and not path.startswith("//"):
        return path
    return request.url.path


def store_event(request: HTTPConnection, access: Access) -> AuditEvent:
    """What the store service fills in for each instance of a STOW-RS request."""
    return replace(
        request_event(request, access, AuditAction.INSTANCES_TRANSFERRED),
        action_code=EventActionCode.CREATE,
    )


def record_read(
    request: HTTPConnection,
    access: Access,
    action: AuditAction,
    found: Iterable[StoredInstance | StoredMetadata],
) -> None:
    """Instances sent (INSTANCES_TRANSFERRED) or shown (INSTANCES_ACCESSED): one event per
    study."""
    for event in per_study(request_event(request, access, action), found):
        _record(request, event)


async def audited_read(
    request: HTTPConnection,
    access: Access,
    action: AuditAction,
    study: str,
    lookup: Awaitable[list[Found]],
) -> list[Found]:
    """What `lookup` finds, recorded as `record_read` does; when nothing is stored there,
    a failed read (MINOR_FAILURE) of the study the URL named, and the NotFound raised on."""
    try:
        found = await lookup
    except NotFound as exc:
        event = replace(
            request_event(request, access, action),
            outcome=EventOutcome.MINOR_FAILURE,
            reason=str(exc),
            study_instance_uid=study,
        )
        _record(request, event)
        raise
    record_read(request, access, action, found)
    return found


def audited_stream(
    request: HTTPConnection,
    access: Access,
    action: AuditAction,
    found: Sequence[StoredInstance],
    chunks: AsyncIterator[Chunk],
) -> AsyncIterator[Chunk]:
    """`chunks` as they come; if they fail part-way (a blob the store cannot read), a
    failed read (SERIOUS_FAILURE) of `found` too, next to the event of the start: the
    trail must not say only "success" for a response cut off."""

    async def guarded() -> AsyncIterator[Chunk]:
        sent = 0
        try:
            async for chunk in chunks:
                sent += len(chunk)
                yield chunk
        except Exception as exc:
            template = replace(
                request_event(request, access, action),
                outcome=EventOutcome.SERIOUS_FAILURE,
                reason=f"the response stopped after {sent} bytes ({type(exc).__name__})",
            )
            for event in per_study(template, found):
                _record(request, event)
            raise

    return guarded()


def record_query(
    request: HTTPConnection,
    access: Access,
    study: str | None,
    outcome: EventOutcome = EventOutcome.SUCCESS,
    reason: str = "",
) -> None:
    """A QIDO-RS search, with its query string as asked."""
    event = replace(
        request_event(request, access, AuditAction.QUERY),
        query=request.url.query,
        study_instance_uid=study,
        outcome=outcome,
        reason=reason,
    )
    _record(request, event)


def record_forbidden(request: HTTPConnection, reason: str) -> None:
    """A request refused for want of a permission (403), by the caller and on the tenant
    of the request."""
    try:
        access = request_access(request)
    except UnknownTenant:
        return  # answered 400 elsewhere; a 403 always has a valid tenant
    except Forbidden:
        # No principal at all (a request that got past sign-in): recorded as anonymous.
        access = Access(anonymous(client_address(request) or None), DEFAULT_TENANT)
    event = replace(
        request_event(request, access, AuditAction.SECURITY_ALERT),
        event_type=AuditEventType.USE_OF_RESTRICTED_FUNCTION,
        outcome=EventOutcome.MINOR_FAILURE,
        reason=reason,
    )
    _record(request, event)


def sign_in_refused(archive: Archive, address: str | None, path: str, reason: str) -> None:
    """A request without a token the archive accepts (401). The reason is the RFC 6750
    text the client was given, which never quotes the token.

    Kept in the default tenant's trail, whatever tenant the URL names: a caller nobody
    signed in must not be able to write into the trail of a tenant of its choosing. The
    reason says which tenant the URL named."""
    named = _tenant_of(path)
    if named != DEFAULT_TENANT:
        reason = f"{reason} (the URL names tenant {named!r})"
        # Not the rest of the path: another tenant's UIDs have no place in this trail.
        path = f"{_TENANT_PREFIX}{named}/..."
    event = replace(
        AuditEvent.of(
            Access(anonymous(address), DEFAULT_TENANT),
            AuditAction.USER_AUTHENTICATION,
            AuditProtocol.DICOMWEB,
            called=path,
        ),
        event_type=AuditEventType.LOGIN,
        outcome=EventOutcome.MINOR_FAILURE,
        reason=reason,
    )
    archive.audit.record(event)


def _tenant_of(path: str) -> str:
    """The tenant a path names (before routing, which has not happened for a 401)."""
    if not path.startswith(_TENANT_PREFIX):
        return DEFAULT_TENANT
    try:
        return check_tenant(path[len(_TENANT_PREFIX) :].partition("/")[0])
    except UnknownTenant:
        return DEFAULT_TENANT
