"""OpenID Connect bearer tokens (RFC 6750, RFC 7519): verified into a `Principal`.

The issuer's signing keys come from its discovery document and JWKS, cached, and fetched
again when a token names a key id we do not know (key rotation needs no restart), at most
once per `refetch_interval` so that tokens with made-up key ids cannot flood the provider.
Only the configured signature algorithms are accepted; `none` never is, and HMAC ones only
with a configured shared secret, which is then the only key they are checked with (so a
public RSA key can never serve as an HMAC secret).

Signature and claims checks are joserfc's (authlib's JOSE implementation, which authlib's
own `authlib.jose` now defers to).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    InvalidKeyIdError,
    JoseError,
)
from joserfc.jwk import KeySet, OctKey

from app.auth.principal import DEFAULT_TENANT, Permission, Principal, UnknownTenant, check_tenant

log = logging.getLogger(__name__)

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
# Keycloak's payload `typ` of tokens that are not access tokens.
_NOT_ACCESS_TOKENS = frozenset({"ID", "Refresh", "Logout"})
# JOSE header `typ` values of access tokens (RFC 9068), or of a plain JWT.
_ACCESS_TYPES = frozenset({"at+jwt", "jwt"})
KNOWN_ALGORITHMS = HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS | {"none"}
# Longest token considered: real ones are a few KB; anything larger is refused unparsed.
MAX_TOKEN_BYTES = 16 * 1024
ALL_TENANTS = "*"


class InvalidToken(Exception):
    """The token is missing or cannot be trusted (HTTP 401). `code` is the RFC 6750 error
    code (None when no credentials were sent at all), the message says what was wrong."""

    def __init__(self, message: str, code: str | None = "invalid_token") -> None:
        super().__init__(message)
        self.code = code


class IssuerUnavailable(Exception):
    """The issuer's keys cannot be fetched and none are cached (HTTP 503)."""


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    audience: str
    algorithms: frozenset[str] = frozenset({"RS256", "ES256", "PS256"})
    # Dotted path of the claim holding permission values (e.g. scope, realm_access.roles).
    permissions_claim: str = "scope"
    # A claim value grants permission P when it equals prefix + P (e.g. "pacs:read").
    permission_prefix: str = "pacs:"
    tenants_claim: str = "tenants"
    # Tenants of a token without the tenants claim (empty: none, for deployments where
    # every token must name its tenants).
    tenants_when_absent: frozenset[str] = frozenset({DEFAULT_TENANT})
    # Shared secret for HS* tokens; without it no HMAC algorithm is accepted.
    hmac_secret: str = ""
    leeway_seconds: int = 30
    # Least time between two fetches of the JWKS for unknown key ids.
    refetch_interval: float = 2.0
    http_timeout: float = 5.0

    def __post_init__(self) -> None:
        unknown = self.algorithms - HMAC_ALGORITHMS - ASYMMETRIC_ALGORITHMS
        if unknown:
            raise ValueError(
                f"PACS_OIDC_ALGORITHMS: not a signature algorithm: {', '.join(sorted(unknown))}"
            )
        if self.algorithms & HMAC_ALGORITHMS and not self.hmac_secret:
            raise ValueError("PACS_OIDC_ALGORITHMS: HS* algorithms need PACS_OIDC_HMAC_SECRET")
        if not 0 <= self.leeway_seconds <= 300:
            raise ValueError("PACS_OIDC_LEEWAY_SECONDS: between 0 and 300 seconds")
        if not self.audience:
            raise ValueError("PACS_OIDC_AUDIENCE: required with PACS_OIDC_ISSUER")
        if not secure_url(self.issuer):
            raise ValueError(
                f"PACS_OIDC_ISSUER: {self.issuer!r} must be an https URL (http only on loopback)"
            )


def _segment(data: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))


def secure_url(url: str) -> bool:
    """https, or http on a loopback address (a provider on the same machine, as in tests):
    keys fetched over plain http elsewhere could be swapped on the way."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    if parts.scheme != "http" or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


def _signing_key(keys: KeySet, kid: str | None) -> Any:
    """The key with this id that may verify signatures (RFC 7517 `use`), or None."""
    try:
        key = keys.get_by_kid(kid)
    except InvalidKeyIdError:
        return None
    return key if key.get("use") in (None, "sig") else None


def unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header of a compact JWS, only to choose the algorithm and key."""
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("the bearer token is not a JWT (three base64url parts)")
    try:
        header = _segment(parts[0])
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise InvalidToken("the bearer token's header is not base64url JSON") from None
    if not isinstance(header, dict):
        raise InvalidToken("the bearer token's header is not a JSON object")
    return header


def claim_values(claims: Mapping[str, Any], path: str) -> list[str] | None:
    """The values of a claim at a dotted path: a list, or a space-separated string."""
    node: Any = claims
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    if isinstance(node, str):
        return node.split()
    if isinstance(node, list):
        return [str(v) for v in node]
    return None


class TokenVerifier:
    def __init__(self, config: OidcConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._client = client or httpx.AsyncClient(timeout=config.http_timeout)
        self._keys: KeySet | None = None
        self._jwks_uri: str | None = None
        self._tried_at = float("-inf")
        self._lock = asyncio.Lock()
        self._hmac = OctKey.import_key(config.hmac_secret) if config.hmac_secret else None
        leeway = config.leeway_seconds
        self._registry = jwt.JWTClaimsRegistry(
            leeway=leeway,
            iss={"essential": True, "value": config.issuer},
            aud={"essential": True, "value": config.audience},
            exp={"essential": True},
            sub={"essential": True},
        )

    async def close(self) -> None:
        await self._client.aclose()

    # -- keys ----------------------------------------------------------------------------

    async def _fetch_keys(self) -> None:
        if self._jwks_uri is None:
            url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
            discovery = await self._get_json(url)
            if discovery.get("issuer") != self.config.issuer:
                raise IssuerUnavailable(
                    f"the discovery document at {url} names issuer "
                    f"{discovery.get('issuer')!r}, not {self.config.issuer!r}"
                )
            jwks_uri = discovery.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not secure_url(jwks_uri):
                raise IssuerUnavailable(
                    f"the discovery document at {url} has no jwks_uri on https (or loopback)"
                )
            self._jwks_uri = jwks_uri
        jwks = await self._get_json(self._jwks_uri)
        try:
            self._keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
        except (JoseError, KeyError, TypeError, ValueError) as exc:
            raise IssuerUnavailable(f"the issuer's JWKS cannot be read: {exc}") from None
        log.info("loaded %d signing keys of %s", len(self._keys.keys), self.config.issuer)

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = await self._client.get(url)
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise IssuerUnavailable(f"cannot read {url}: {exc}") from None
        if not isinstance(body, dict):
            raise IssuerUnavailable(f"{url} is not a JSON object")
        return body

    async def load(self) -> None:
        """Fetch the issuer's keys now (at start); later fetches happen on demand."""
        async with self._lock:
            await self._fetch_keys()

    async def _key_for(self, kid: str | None) -> Any:
        keys = self._keys
        if keys is not None and (key := _signing_key(keys, kid)) is not None:
            return key
        async with self._lock:
            # Another request may have fetched the new keys while we waited.
            fresh = self._keys
            if fresh is not keys and fresh is not None and (key := _signing_key(fresh, kid)):
                return key
            # At most one attempt per interval, failed ones included, so that tokens with
            # made-up key ids cannot make us hammer the issuer (or wait on it when it is down).
            if time.monotonic() - self._tried_at >= self.config.refetch_interval:
                self._tried_at = time.monotonic()
                try:
                    await self._fetch_keys()
                except IssuerUnavailable as exc:
                    log.warning("cannot fetch the issuer's signing keys: %s", exc)
                    if self._keys is None:
                        raise
            elif self._keys is None:
                raise IssuerUnavailable("no signing keys yet; the last fetch failed")
        assert self._keys is not None
        if (key := _signing_key(self._keys, kid)) is None:
            # The kid is the caller's text: not echoed back.
            raise InvalidToken("the token is signed with a key the issuer does not publish")
        return key

    # -- tokens --------------------------------------------------------------------------

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims once its signature, issuer, audience and times are checked."""
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("the bearer token is too long")
        header = unverified_header(token)
        typ = header.get("typ")
        if typ is not None and str(typ).lower().removeprefix("application/") not in _ACCESS_TYPES:
            # RFC 9068: an ID token or logout token is not an access token.
            raise InvalidToken("the token is not an access token (typ)")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.config.algorithms:
            # Name the algorithm only when it is one (the header is the caller's text).
            known = alg in KNOWN_ALGORITHMS if isinstance(alg, str) else False
            named = f"{alg!r}" if known else "of this token"
            raise InvalidToken(f"the signature algorithm {named} is not accepted")
        if alg in HMAC_ALGORITHMS:
            key: Any = self._hmac
        else:
            kid = header.get("kid")
            key = await self._key_for(kid if isinstance(kid, str) else None)
        try:
            decoded = jwt.decode(token, key, algorithms=[alg])
        except BadSignatureError:
            raise InvalidToken("the token's signature does not verify") from None
        except (JoseError, RecursionError) as exc:
            # joserfc's descriptions may quote the caller's header: name the kind only.
            raise InvalidToken(f"the token cannot be decoded ({type(exc).__name__})") from None
        try:
            self._registry.validate(decoded.claims)
        except ExpiredTokenError:
            raise InvalidToken("the token has expired") from None
        except ClaimError as exc:
            raise InvalidToken(_claim_message(exc)) from None
        if decoded.claims.get("typ") in _NOT_ACCESS_TOKENS:
            # Keycloak marks every token `typ: JWT` in the header and says in the payload
            # which it is: an ID token sent where the archive's audience matches is not one.
            raise InvalidToken("the token is not an access token (typ)")
        return decoded.claims

    async def principal(self, token: str, address: str | None = None) -> Principal:
        claims = await self.verify(token)
        return principal_from_claims(self.config, claims, address)


def _claim_message(exc: ClaimError) -> str:
    claim = exc.claim
    if claim == "nbf":
        return "the token is not valid yet (nbf)"
    if claim == "iat":
        return "the token is issued in the future (iat)"
    if claim == "iss":
        return "the token comes from another issuer"
    if claim == "aud":
        return "the token is meant for another audience"
    return f"the token's {claim!r} claim is missing or invalid"


def principal_from_claims(
    config: OidcConfig, claims: Mapping[str, Any], address: str | None = None
) -> Principal:
    granted = claim_values(claims, config.permissions_claim) or []
    prefix = config.permission_prefix
    permissions = frozenset(p for p in Permission if f"{prefix}{p}" in granted)
    tenant_values = claim_values(claims, config.tenants_claim)
    tenants: frozenset[str] | None
    if tenant_values is None:
        tenants = config.tenants_when_absent
    elif ALL_TENANTS in tenant_values:
        tenants = None
    else:
        # A malformed name in the claim simply grants nothing.
        tenants = frozenset(t for t in tenant_values if _is_tenant(t))
    client = claims.get("azp") or claims.get("client_id")
    return Principal(
        subject=str(claims.get("sub")),
        permissions=permissions,
        tenants=tenants,
        client=str(client) if client else None,
        address=address,
    )


def _is_tenant(name: str) -> bool:
    try:
        check_tenant(name)
    except UnknownTenant:
        return False
    return True
