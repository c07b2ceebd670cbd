"""The HTTP application: one route table for every DICOMweb transaction."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from app.auth.tokens import IssuerUnavailable, TokenVerifier
from app.services.archive import Archive
from app.web import (
    audit,
    auditing,
    changefeed,
    delete,
    forwarding_rules,
    jobs,
    qido,
    rendered,
    stow,
    wado,
    wado_uri,
    webhooks,
)
from app.web.access import ANONYMOUS_ALLOWED_KEY
from app.web.access_log import AccessLog
from app.web.errors import EXCEPTION_HANDLERS
from app.web.proxies import LinkSettings
from app.web.signin import SignInMiddleware
from app.web.urls import DICOMWEB_PREFIX, TENANTS_PATH

log = logging.getLogger(__name__)

_STUDY = "/studies/{study}"
_SERIES = _STUDY + "/series/{series}"
_INSTANCE = _SERIES + "/instances/{instance}"

Endpoint = Callable[[Request], Awaitable[Response]]


def _get_or_post(get: Endpoint, post: Endpoint) -> Endpoint:
    """One route for both methods, so that a 405 lists them both in Allow."""

    async def endpoint(request: Request) -> Response:
        return await (post if request.method == "POST" else get)(request)

    return endpoint


def _or_delete(other: Endpoint) -> Endpoint:
    """`other`, or DELETE (app/web/delete.py) on the same route, for one Allow list."""

    async def endpoint(request: Request) -> Response:
        if request.method == "DELETE":
            return await delete.delete_resource(request)
        return await other(request)

    return endpoint


DICOMWEB_ROUTES = [
    Route(
        "/studies",
        _get_or_post(qido.search_studies, stow.store_instances),
        methods=["GET", "POST"],
    ),
    Route("/series", qido.search_series, methods=["GET"]),
    Route("/instances", qido.search_instances, methods=["GET"]),
    Route(
        _STUDY,
        _or_delete(_get_or_post(wado.retrieve_instances, stow.store_instances)),
        methods=["GET", "POST", "DELETE"],
    ),
    Route(_STUDY + "/metadata", wado.retrieve_metadata, methods=["GET"]),
    Route(_STUDY + "/series", qido.search_series, methods=["GET"]),
    Route(_STUDY + "/instances", qido.search_instances, methods=["GET"]),
    Route(_SERIES, _or_delete(wado.retrieve_instances), methods=["GET", "DELETE"]),
    Route(_SERIES + "/metadata", wado.retrieve_metadata, methods=["GET"]),
    Route(_SERIES + "/instances", qido.search_instances, methods=["GET"]),
    Route(_INSTANCE, _or_delete(wado.retrieve_instances), methods=["GET", "DELETE"]),
    Route(_INSTANCE + "/metadata", wado.retrieve_metadata, methods=["GET"]),
    Route(_INSTANCE + "/frames/{frames}", wado.retrieve_frames, methods=["GET"]),
    Route(_STUDY + "/rendered", rendered.retrieve_rendered, methods=["GET"]),
    Route(_SERIES + "/rendered", rendered.retrieve_rendered, methods=["GET"]),
    Route(_INSTANCE + "/rendered", rendered.retrieve_rendered, methods=["GET"]),
    Route(
        _INSTANCE + "/frames/{frames}/rendered",
        rendered.retrieve_rendered_frames,
        methods=["GET"],
    ),
    Route(_STUDY + "/thumbnail", rendered.retrieve_thumbnail, methods=["GET"]),
    Route(_SERIES + "/thumbnail", rendered.retrieve_thumbnail, methods=["GET"]),
    Route(_INSTANCE + "/thumbnail", rendered.retrieve_thumbnail, methods=["GET"]),
    Route(_INSTANCE + "/frames/{frames}/thumbnail", rendered.retrieve_thumbnail, methods=["GET"]),
    Route(_INSTANCE + "/bulkdata/{path:path}", wado.retrieve_bulkdata, methods=["GET"]),
    # WADO-URI, also under the DICOMweb root for viewers configured with one base URL.
    Route("/wado", wado_uri.retrieve, methods=["GET"]),
    # The audit trail (permission admin).
    Route("/audit", audit.search_audit, methods=["GET"]),
    # Forwarding jobs (permission admin).
    Route("/jobs", jobs.list_jobs, methods=["GET"]),
    Route("/jobs/{job}/retry", jobs.retry_job, methods=["POST"]),
    # Forwarding rules (permission admin).
    Route("/forwarding-rules", forwarding_rules.list_all, methods=["GET"]),
    Route("/forwarding-rules", forwarding_rules.create, methods=["POST"]),
    Route("/forwarding-rules/{name}", forwarding_rules.get_one, methods=["GET"]),
    Route("/forwarding-rules/{name}", forwarding_rules.delete, methods=["DELETE"]),
    # The change feed (permission read).
    Route("/changefeed", changefeed.read_feed, methods=["GET"]),
    Route("/changefeed/latest", changefeed.read_latest, methods=["GET"]),
    # Webhook subscriptions (permission admin).
    Route("/webhooks", webhooks.list_all, methods=["GET"]),
    Route("/webhooks", webhooks.create, methods=["POST"]),
    Route("/webhooks/{id}", webhooks.get_one, methods=["GET"]),
    Route("/webhooks/{id}", webhooks.delete, methods=["DELETE"]),
    Route("/webhooks/{id}/dead-letters", webhooks.dead_letters, methods=["GET"]),
    Route("/webhooks/{id}/dead-letters/retry", webhooks.retry, methods=["POST"]),
]


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app(
    open_archive: Callable[[], AbstractAsyncContextManager[Archive]],
    *,
    cors_origins: str = "*",
    verifier: TokenVerifier | None = None,
    links: LinkSettings | None = None,
) -> ASGIApp:
    """The ASGI app; `open_archive` opens the backends for the app's lifetime. With a
    `verifier`, every request but /health needs a bearer token it accepts; `links`
    says whose forwarded headers to believe and what generated links start with."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_archive() as archive:
            app.state.archive = archive
            if verifier is not None:
                try:
                    await verifier.load()  # the first request need not wait for the keys
                except IssuerUnavailable as exc:
                    log.warning("signing keys not loaded yet (fetched on demand): %s", exc)
            try:
                yield
            finally:
                if verifier is not None:
                    await verifier.close()

    inner = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/wado", wado_uri.retrieve, methods=["GET"]),
            # The same table for each tenant; first, as the plain mount would take its paths.
            Mount(DICOMWEB_PREFIX + TENANTS_PATH + "/{tenant}", routes=DICOMWEB_ROUTES),
            Mount(DICOMWEB_PREFIX, routes=DICOMWEB_ROUTES),
        ],
        exception_handlers=dict(EXCEPTION_HANDLERS),
        lifespan=lifespan,
    )
    inner.state.links = links or LinkSettings()
    setattr(inner.state, ANONYMOUS_ALLOWED_KEY, verifier is None)

    async def sign_in_refused(
        address: str | None, path: str, code: str | None, reason: str
    ) -> None:
        archive: Archive | None = getattr(inner.state, "archive", None)
        if archive is not None:  # None only before start-up completes
            auditing.sign_in_refused(archive, address, path, reason)

    guarded: ASGIApp = (
        inner
        if verifier is None
        else SignInMiddleware(inner, verifier, sign_in_refused, inner.state.links)
    )
    origins = [o.strip() for o in cors_origins.split(",") if o.strip()]
    # CORS wraps the whole app, outside Starlette's error middleware and sign-in, so that
    # even an unexpected 500 or a 401 carries the headers a browser needs to show the error.
    cors: Any = CORSMiddleware(
        guarded,
        allow_origins=origins,
        allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=[
            "Content-Type",
            "Content-Length",
            "Warning",
            "Content-Location",
            "Content-Range",
            "Accept-Ranges",
            "Content-Disposition",
            "ETag",
            "WWW-Authenticate",
        ],
        max_age=3600,
    )
    # Outermost, to log every answer once, including CORS preflights and sign-in refusals.
    return AccessLog(cors, inner.routes, inner.state.links)
