"""Token parsing and the principal a token's claims give (no provider needed here: the
signature path is tested against the real OpenID provider in tests/e2e/test_signin.py)."""

from __future__ import annotations

import asyncio
import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from starlette.datastructures import Headers

from app.auth.principal import Access, Forbidden, Permission, anonymous
from app.auth.tokens import (
    InvalidToken,
    IssuerUnavailable,
    OidcConfig,
    TokenVerifier,
    claim_values,
    principal_from_claims,
)
from app.auth.tokens import unverified_header as header_of
from app.web.errors import challenge
from app.web.signin import bearer_token

CONFIG = OidcConfig(issuer="https://idp.test", audience="pacs")


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("claims", "path", "expected"),
    [
        ({"scope": "openid pacs:read pacs:write"}, "scope", ["openid", "pacs:read", "pacs:write"]),
        ({"roles": ["pacs:read"]}, "roles", ["pacs:read"]),
        ({"realm_access": {"roles": ["a", "b"]}}, "realm_access.roles", ["a", "b"]),
        ({"realm_access": {}}, "realm_access.roles", None),
        ({"scope": 3}, "scope", None),
        ({}, "scope", None),
    ],
)
def test_claim_values(claims: dict[str, object], path: str, expected: list[str] | None) -> None:
    assert claim_values(claims, path) == expected


def test_permissions_and_tenants_from_claims() -> None:
    claims = {"sub": "ai-1", "azp": "cad", "scope": "pacs:read pacs:admin read", "tenants": "a b"}
    principal = principal_from_claims(CONFIG, claims, "10.0.0.9")
    assert principal.subject == "ai-1"
    assert principal.client == "cad"
    assert principal.address == "10.0.0.9"
    # A bare "read" is not the configured "pacs:read": only prefixed values count.
    assert principal.permissions == {Permission.READ, Permission.ADMIN}
    assert principal.tenants == {"a", "b"}


def test_tenants_claim_absent_means_default_only_and_star_means_all() -> None:
    assert principal_from_claims(CONFIG, {"sub": "x"}).tenants == {"default"}
    assert principal_from_claims(CONFIG, {"sub": "x", "tenants": ["*"]}).tenants is None
    # Malformed names grant nothing rather than failing the token.
    assert principal_from_claims(CONFIG, {"sub": "x", "tenants": ["A/../b", "ok"]}).tenants == {
        "ok"
    }


def test_tokens_without_the_tenants_claim_get_the_configured_tenants() -> None:
    strict = OidcConfig(issuer="https://idp.test", audience="pacs", tenants_when_absent=frozenset())
    assert principal_from_claims(strict, {"sub": "x", "scope": "pacs:read"}).tenants == set()


@pytest.mark.parametrize(
    "issuer", ["http://idp.example.org", "ftp://idp", "http://10.0.0.1/realms/x", "idp"]
)
def test_issuers_must_be_https_except_on_loopback(issuer: str) -> None:
    with pytest.raises(ValueError, match="must be an https URL"):
        OidcConfig(issuer=issuer, audience="a")
    for fine in ("https://idp.example.org", "http://127.0.0.1:8080", "http://localhost/x"):
        assert OidcConfig(issuer=fine, audience="a").issuer == fine


def test_keycloak_roles_claim() -> None:
    config = OidcConfig(
        issuer="https://idp.test", audience="pacs", permissions_claim="realm_access.roles"
    )
    claims = {"sub": "u", "realm_access": {"roles": ["pacs:write", "offline_access"]}}
    assert principal_from_claims(config, claims).permissions == {Permission.WRITE}


def test_access_requires_permission_and_tenant() -> None:
    principal = principal_from_claims(CONFIG, {"sub": "u", "scope": "pacs:read", "tenants": "a"})
    Access(principal, "a").require(Permission.READ)
    with pytest.raises(Forbidden, match="write permission"):
        Access(principal, "a").require(Permission.WRITE)
    with pytest.raises(Forbidden, match="tenant 'b'"):
        Access(principal, "b").require(Permission.READ)
    Access(anonymous(), "b").require(Permission.DELETE)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("garbage", "not a JWT"),
        ("a.b", "not a JWT"),
        ("!!!.e30.sig", "not base64url JSON"),
        (f"{_b64('[1]')}.e30.sig", "not a JSON object"),
    ],
)
def test_malformed_tokens(token: str, message: str) -> None:
    with pytest.raises(InvalidToken, match=message) as raised:
        header_of(token)
    assert raised.value.code == "invalid_token"


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ([], None),
        ([("authorization", "Basic dTpw")], "invalid_request"),
        ([("authorization", "Bearer")], "invalid_request"),
        ([("authorization", "Bearer a b")], "invalid_request"),
        ([("authorization", "Bearer a"), ("authorization", "Bearer b")], "invalid_request"),
    ],
)
def test_bearer_header_errors(headers: list[tuple[str, str]], code: str | None) -> None:
    raw = [(k.encode(), v.encode()) for k, v in headers]
    with pytest.raises(InvalidToken) as raised:
        bearer_token(Headers(raw=raw))
    assert raised.value.code == code


def test_bearer_header_accepts_any_case_scheme() -> None:
    assert bearer_token(Headers({"authorization": "bearer abc.def.ghi"})) == "abc.def.ghi"


def test_challenge_keeps_the_description_in_rfc_6750s_characters() -> None:
    assert challenge("invalid_token", "kid \u20ac\n\\x") == (
        'Bearer realm="pacs", error="invalid_token", error_description="kid ???x"'
    )


def test_challenge() -> None:
    assert challenge() == 'Bearer realm="pacs"'
    assert challenge("invalid_token", 'bad "x"') == (
        'Bearer realm="pacs", error="invalid_token", error_description="bad \'x\'"'
    )


def test_config_refuses_hmac_without_secret_and_unknown_algorithms() -> None:
    with pytest.raises(ValueError, match="HS"):
        OidcConfig(issuer="i", audience="a", algorithms=frozenset({"HS256"}))
    with pytest.raises(ValueError, match="none"):
        OidcConfig(issuer="i", audience="a", algorithms=frozenset({"none"}))
    with pytest.raises(ValueError, match="AUDIENCE"):
        OidcConfig(issuer="i", audience="")


class _FailingIssuer(BaseHTTPRequestHandler):
    """A real HTTP issuer that answers every request with 503, counting them."""

    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


async def test_an_issuer_that_is_down_is_asked_at_most_once_per_interval() -> None:
    """Without cached keys every token used to fetch the keys again, one after another."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FailingIssuer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        issuer = f"http://127.0.0.1:{server.server_address[1]}"
        verifier = TokenVerifier(OidcConfig(issuer=issuer, audience="pacs"))
        header = base64.urlsafe_b64encode(b'{"alg":"RS256","kid":"k"}').decode().rstrip("=")
        token = f"{header}.e30.AA"
        results = await asyncio.gather(
            *(verifier.verify(token) for _ in range(20)), return_exceptions=True
        )
        await verifier.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert all(isinstance(r, IssuerUnavailable) for r in results), results
    assert _FailingIssuer.hits == 1
