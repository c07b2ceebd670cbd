"""Sign-in: every request but the public ones needs a valid bearer token (RFC 6750).

An ASGI middleware in front of the route table, so that no route, present or future, can
be reached without it: it turns the token into a `Principal` for `request_access`, or
answers 401 with `WWW-Authenticate: Bearer` and the RFC 6750 error code. What the principal
may do (403) is decided by the services, which see every request's `Access`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from app.auth.principal import Principal
from app.auth.tokens import InvalidToken, IssuerUnavailable, TokenVerifier
from app.web.access import PRINCIPAL_KEY
from app.web.errors import challenge, error_response
from app.web.proxies import LinkSettings, request_origin

log = logging.getLogger(__name__)

# Paths anyone may call: liveness only, nothing that holds or names patient data.
PUBLIC_PATHS = frozenset({"/health"})

# Told of every refused request (client address, path, RFC 6750 code, reason), for the
# audit trail. The reason is the text the client is given, which never quotes the token.
RefusalListener = Callable[[str | None, str, str | None, str], Awaitable[None]]


def bearer_token(headers: Headers) -> str:
    values = headers.getlist("authorization")
    if not values:
        raise InvalidToken("this request needs a bearer token (Authorization: Bearer)", None)
    if len(values) > 1:
        raise InvalidToken("more than one Authorization header", "invalid_request")
    scheme, _, token = values[0].strip().partition(" ")
    # RFC 6750 would answer invalid_request with 400; issue 9 asks 401 for every credential
    # the archive cannot use, so clients have one answer to act on (sign in again).
    if scheme.lower() != "bearer" or not token.strip() or " " in token.strip():
        raise InvalidToken("the Authorization header must be 'Bearer <token>'", "invalid_request")
    return token.strip()


class SignInMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        verifier: TokenVerifier,
        on_refused: RefusalListener | None = None,
        links: LinkSettings | None = None,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.on_refused = on_refused
        self.links = links or LinkSettings()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        # The real client, not a trusted proxy in front of us (the route table is not
        # reached yet, so the link settings come from here rather than the app).
        address = request_origin(HTTPConnection(scope), self.links).client or None
        try:
            principal = await self._principal(scope, address)
        except InvalidToken as exc:
            if self.on_refused is not None:
                await self.on_refused(address, scope["path"], exc.code, str(exc))
            headers = {"WWW-Authenticate": challenge(exc.code, str(exc) if exc.code else None)}
            await error_response(401, str(exc), headers)(scope, receive, send)
            return
        except IssuerUnavailable:
            # The verifier logs its failed fetches, at most one per interval.
            response = error_response(
                503,
                "sign-in is unavailable: the identity provider cannot be reached",
                {"Retry-After": "5"},
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})[PRINCIPAL_KEY] = principal
        await self.app(scope, receive, send)

    async def _principal(self, scope: Scope, address: str | None) -> Principal:
        try:
            return await self.verifier.principal(bearer_token(Headers(scope=scope)), address)
        except (InvalidToken, IssuerUnavailable):
            raise
        except Exception as exc:
            # Whatever a hostile token makes the JOSE code raise is a token we cannot use:
            # 401 (this middleware is outside the app's error handlers), never a 500.
            log.warning("token refused on an unexpected %s", type(exc).__name__)
            raise InvalidToken("the bearer token cannot be read") from None
