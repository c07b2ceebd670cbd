"""The admin API of forwarding rules (app/services/forward_rule_store.py), under the
DICOMweb root and per tenant (`/dicomweb/tenants/{tenant}/forwarding-rules`), permission
admin:

- `POST /forwarding-rules` (a rule in the form of the PACS_FORWARDING_RULES file): 201 with
  the rule; 400 naming the rule and field, 409 when its name is taken;
- `GET /forwarding-rules`, `GET /forwarding-rules/{name}`: the settings file's rules
  (`"source": "file"`) and the tenant's (`"source": "api"`);
- `DELETE /forwarding-rules/{name}`: 204; 409 for a rule of the file (read only).

Every node applies a change within PACS_FORWARD_RULES_REFRESH_MS.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from app.services.archive import Archive
from app.web.webhooks import admin_access, json_response, read_body


def _archive(request: Request) -> Archive:
    archive: Archive = request.app.state.archive
    return archive


async def create(request: Request) -> Response:
    access = admin_access(request)
    body = await read_body(request, "a forwarding rule")
    return json_response(await _archive(request).forward_rules.create(access, body), 201)


async def list_all(request: Request) -> Response:
    return json_response(await _archive(request).forward_rules.all(admin_access(request)))


async def get_one(request: Request) -> Response:
    found = await _archive(request).forward_rules.get(
        admin_access(request), request.path_params["name"]
    )
    return json_response(found)


async def delete(request: Request) -> Response:
    await _archive(request).forward_rules.delete(admin_access(request), request.path_params["name"])
    return Response(status_code=204)
