"""The admin API of webhook subscriptions (app/services/webhooks.py), under the DICOMweb
root and per tenant (`/dicomweb/tenants/{tenant}/webhooks`), permission admin:

- `POST /webhooks` (JSON: url, events, filter, secret, active): 201 with the subscription
  and its `secret`, the only answer that shows it;
- `GET /webhooks`, `GET /webhooks/{id}`: subscriptions with their `status`
  (lastDeliveredSequence, failures, lastError, deadLetters), never the secret;
- `DELETE /webhooks/{id}`: 204;
- `GET /webhooks/{id}/dead-letters?limit=`: entries refused or failed every attempt;
- `POST /webhooks/{id}/dead-letters/retry[?sequence=N]`: 202, delivered again in the
  background (within PACS_WEBHOOK_REFRESH_MS); a failure puts the letter back.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from app.auth.principal import Access, Permission
from app.services.archive import Archive
from app.services.errors import BadRequest
from app.services.ports import DeadLetter, Webhook, WebhookStatus
from app.web.access import request_access
from app.web.errors import PayloadTooLarge
from app.web.params import query_int

JSON = "application/json"
MAX_BODY = 64 * 1024  # a subscription is a few hundred bytes
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def _time(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _hook(hook: Webhook) -> dict[str, Any]:
    return {
        "id": hook.id,
        "url": hook.url,
        "events": list(hook.events),
        "filter": dict(hook.filter),
        "active": hook.active,
        "created": _time(hook.created),
    }


def _status(found: WebhookStatus) -> dict[str, Any]:
    return {
        **_hook(found.webhook),
        "status": {
            "lastDeliveredSequence": found.last_delivered,
            "failures": found.failures,
            "lastError": found.last_error,
            "deadLetters": found.dead_letters,
        },
    }


def _letter(letter: DeadLetter) -> dict[str, Any]:
    return {
        "sequence": letter.sequence,
        "action": letter.action,
        "reason": letter.reason,
        "attempts": letter.attempts,
        "failedAt": _time(letter.failed_at),
        "retryRequested": letter.retry,
    }


def json_response(value: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status_code=status, media_type=JSON)


async def read_body(request: Request, what: str = "a subscription") -> Any:
    """The JSON body of an admin API's creation: at most MAX_BODY bytes (413), JSON (400)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise PayloadTooLarge(f"{what} is at most {MAX_BODY} bytes of JSON")
        chunks.append(chunk)
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None


def admin_access(request: Request, *parameters: str) -> Access:
    """The caller, refused (403) before anything of the request is looked at unless an
    admin of the tenant; then the query parameters, all known."""
    access = request_access(request)
    access.require(Permission.ADMIN)
    for name in request.query_params:
        if name not in parameters:
            raise BadRequest(f"unknown query parameter {name!r}")
    return access


def _archive(request: Request) -> Archive:
    archive: Archive = request.app.state.archive
    return archive


async def create(request: Request) -> Response:
    access = admin_access(request)
    hook = await _archive(request).webhooks.create(access, await read_body(request))
    return json_response({**_hook(hook), "secret": hook.secret}, 201)


async def list_all(request: Request) -> Response:
    found = await _archive(request).webhooks.all(admin_access(request))
    return json_response([_status(f) for f in found])


async def get_one(request: Request) -> Response:
    found = await _archive(request).webhooks.get(admin_access(request), request.path_params["id"])
    return json_response(_status(found))


async def delete(request: Request) -> Response:
    await _archive(request).webhooks.delete(admin_access(request), request.path_params["id"])
    return Response(status_code=204)


async def dead_letters(request: Request) -> Response:
    access = admin_access(request, "limit")
    limit = query_int(request.query_params, "limit", 1, MAX_LIMIT) or DEFAULT_LIMIT
    found = await _archive(request).webhooks.dead_letters(access, request.path_params["id"], limit)
    return json_response([_letter(letter) for letter in found])


async def retry(request: Request) -> Response:
    access = admin_access(request, "sequence")
    sequence = query_int(request.query_params, "sequence", 1, 2**63 - 1)
    count = await _archive(request).webhooks.retry(access, request.path_params["id"], sequence)
    return json_response({"retryRequested": count}, 202)
