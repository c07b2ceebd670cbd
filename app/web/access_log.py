"""One access log line per HTTP request, at INFO: method, route template, status, bytes sent,
duration and client address.

The route template (`/dicomweb/studies/{study}/series`), not the path, and never the query
string: a QIDO-RS query names patients (PatientName, PatientBirthDate), and patient data
stays out of the application log (the audit trail keeps what was asked). uvicorn's own
access log, which logs the path with its query, is off.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from starlette.requests import HTTPConnection
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.web.proxies import LinkSettings, request_origin

log = logging.getLogger("pacs.access")

NO_ROUTE = "(unrouted)"


class AccessLog:
    """ASGI middleware, outermost: it sees every answer (sign-in refusals, CORS preflights,
    errors) and logs once the response has been sent, or the request ended."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute], links: LinkSettings) -> None:
        self.app = app
        self.routes = routes
        self.links = links

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request = dict(scope)  # routing changes root_path and path_params in `scope`
        status = 0
        sent = 0

        async def counting(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            elif message["type"] == "http.response.zerocopysend":  # app/web/zerocopy.py
                sent += message["count"]
            await send(message)

        try:
            await self.app(scope, receive, counting)
        finally:
            log.info(
                "%s %s %s %d B %.1f ms from %s",
                scope["method"],
                route_template(self.routes, request, scope.get("route")),
                status or "-",  # nothing sent: the client left, or the app failed
                sent,
                (time.perf_counter() - start) * 1000,
                self._client(request),
            )

    def _client(self, scope: Scope) -> str:
        """The peer, or the client a trusted proxy names."""
        try:
            return request_origin(HTTPConnection(scope), self.links).client or "-"
        except (KeyError, ValueError):
            return "-"


def route_template(
    routes: Sequence[BaseRoute], scope: Scope, routed: BaseRoute | None = None
) -> str:
    """The template of the route `scope` matches, through mounts (Starlette keeps only the
    innermost route in the scope, without its mount's prefix); NO_ROUTE when none does.

    `routed` is the innermost route the router chose (`scope["route"]` after routing): in
    the mount that holds it, it is the answer, so the mount's routes (thirty patterns, each
    a regular expression) need not be matched again for the log line."""
    partial = ""
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.NONE:
            continue
        if isinstance(route, Mount):
            if isinstance(routed, Route) and any(r is routed for r in route.routes):
                inner = routed.path_format
            else:
                inner = route_template(route.routes, {**scope, **child})
            template = NO_ROUTE if inner == NO_ROUTE else route.path + inner
        elif isinstance(route, Route):
            template = route.path_format
        else:
            template = getattr(route, "path", NO_ROUTE)
        if match is Match.FULL:
            return template
        partial = partial or template  # the path matches, the method does not (405)
    return partial or NO_ROUTE
