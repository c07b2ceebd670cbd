"""A real OpenID Provider for the sign-in tests: oidc-provider (Node.js) run by
tests/support/oidc/server.mjs on a free loopback port.

Its signing keys are made here, so that a test can also forge tokens with the provider's own
key (not yet valid, wrong audience, HS256 keyed with the public key...). Tokens come from its
real token endpoint: client credentials for services, authorization code with PKCE for the
browser (OHIF). `make test` installs it (`npm ci` by tests/support/oidc/install.sh); without
Node.js or its node_modules the tests that need it skip, and fail in CI.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict
from urllib.parse import parse_qs, urlsplit

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, KeyParameters, KeySet, RSAKey

from tests.support.browser import require
from tests.support.processes import background_process
from tests.support.server import free_port

if TYPE_CHECKING:  # annotations only: no run-time dependency on typing_extensions
    from typing_extensions import Unpack


class TokenClaims(TypedDict, total=False):
    """What a client credentials request may ask for beyond its scopes: a tenants claim
    (a list, or a string such as "*"), extra claims, another resource server."""

    tenants: list[str] | str | None
    extra_claims: Mapping[str, Any] | None
    resource: str | None


RUNNER_DIR = Path(__file__).resolve().parent / "oidc"
SETUP_HINT = "run `make test` (tests/support/oidc/install.sh runs npm ci there)"

AUDIENCE = "https://pacs.test/dicomweb"
# Another resource server of the same provider: its tokens are real but not for the archive.
OTHER_AUDIENCE = "https://other.test/api"
PERMISSIONS = ("pacs:read", "pacs:write", "pacs:delete", "pacs:admin")
TENANTS_CLAIM = "tenants"

# The clients of the default provider (`oidc_provider` fixture).
SERVICE = "ai-service"  # confidential, client credentials, any pacs:* scope, asks for tenants
SHORT_LIVED = "short-lived"  # the same with access tokens of SHORT_TTL seconds
SHORT_TTL = 3
ACCESS_TOKEN_TTL = 300
# A public client signing users in (authorization code with PKCE), as a viewer does; its
# redirect URI is never opened: `OpenIdProvider.sign_in` takes the code from the redirect.
WEB = "web-viewer"
WEB_REDIRECT_URI = "http://127.0.0.1:9/callback"


def signing_key(kid: str, alg: str = "RS256") -> dict[str, Any]:
    """A new private signing JWK (RS256: RSA 2048; ES256: P-256)."""
    parameters: KeyParameters = {"kid": kid, "alg": alg, "use": "sig"}
    key: RSAKey | ECKey
    if alg == "RS256":
        key = RSAKey.generate_key(2048, parameters=parameters, private=True)
    elif alg == "ES256":
        key = ECKey.generate_key("P-256", parameters=parameters, private=True)
    else:
        raise ValueError(f"no key for {alg}")
    return dict(key.as_dict(private=True))


@dataclass(frozen=True)
class Client:
    """An OAuth client of the provider and our settings for it."""

    client_id: str
    secret: str | None = None  # None: a public client (PKCE, no authentication)
    scopes: Sequence[str] = PERMISSIONS
    grant_types: Sequence[str] = ("client_credentials",)
    redirect_uris: Sequence[str] = ()
    tenants: list[str] | str | None = None  # the tenants claim of its tokens (None: none)
    access_token_ttl: int | None = None
    extra_claims: Mapping[str, Any] = field(default_factory=dict)
    # May ask the token endpoint for any tenants and extra claims (see server.mjs).
    test_claims: bool = True

    def metadata(self) -> dict[str, Any]:
        public = self.secret is None
        entry: dict[str, Any] = {
            "client_id": self.client_id,
            "grant_types": list(self.grant_types),
            "redirect_uris": list(self.redirect_uris),
            "response_types": ["code"] if "authorization_code" in self.grant_types else [],
            # A browser client signs users in (OpenID scopes); a service only gets tokens.
            "scope": " ".join([*(["openid", "profile", "email"] if public else []), *self.scopes]),
            "token_endpoint_auth_method": "none" if public else "client_secret_basic",
            "extra_claims": dict(self.extra_claims),
            "test_claims": self.test_claims,
        }
        if not public:
            entry["client_secret"] = self.secret
        if self.tenants is not None:
            entry["tenants"] = self.tenants
        if self.access_token_ttl is not None:
            entry["access_token_ttl"] = self.access_token_ttl
        return entry


@dataclass(frozen=True)
class Account:
    """A user who signs in on the provider's login page."""

    username: str
    password: str
    name: str = ""
    tenants: list[str] | str | None = None
    extra_claims: Mapping[str, Any] = field(default_factory=dict)

    def entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "password": self.password,
            "name": self.name or self.username,
            "email": f"{self.username}@pacs.test",
            "extra_claims": dict(self.extra_claims),
        }
        if self.tenants is not None:
            entry["tenants"] = self.tenants
        return entry


def default_clients() -> list[Client]:
    return [
        Client(SERVICE, secret=secrets.token_urlsafe(32)),
        Client(SHORT_LIVED, secret=secrets.token_urlsafe(32), access_token_ttl=SHORT_TTL),
        Client(
            WEB,
            grant_types=("authorization_code",),
            redirect_uris=(WEB_REDIRECT_URI,),
            test_claims=False,
        ),
    ]


def default_accounts() -> list[Account]:
    """Users of the default provider: one of the default tenant only (no tenants claim), one
    of two named tenants, one of every tenant."""
    return [
        Account("reader", secrets.token_urlsafe(12), name="Rita Reader"),
        Account("two-sites", secrets.token_urlsafe(12), tenants=["north", "south"]),
        Account("everywhere", secrets.token_urlsafe(12), tenants="*"),
    ]


class SignInRefused(Exception):
    """The provider's login page did not accept the username and password."""


class OpenIdProvider:
    """A running provider: its issuer, the archive's audience, tokens from its token endpoint,
    its signing keys (private ones too) and run-time key rotation."""

    def __init__(
        self,
        issuer: str,
        clients: Sequence[Client],
        accounts: Sequence[Account],
        keys: list[dict[str, Any]],
    ) -> None:
        self.issuer = issuer
        self.audience = AUDIENCE
        self.other_audience = OTHER_AUDIENCE
        self.clients = {c.client_id: c for c in clients}
        self.accounts = {a.username: a for a in accounts}
        self._keys = keys  # private JWKs, the signing one first
        self._http = httpx.Client(timeout=30)

    def close(self) -> None:
        self._http.close()

    # --- discovery and keys --------------------------------------------------------------------

    def discovery(self) -> dict[str, Any]:
        response = self._http.get(f"{self.issuer}/.well-known/openid-configuration")
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document

    def jwks(self) -> dict[str, Any]:
        """The public JWKS the provider publishes now."""
        response = self._http.get(self.discovery()["jwks_uri"])
        response.raise_for_status()
        keys: dict[str, Any] = response.json()
        return keys

    def key_set(self) -> KeySet:
        """The published JWKS, for joserfc's `jwt.decode`."""
        return KeySet.import_key_set(self.jwks())  # type: ignore[arg-type]

    @property
    def signing_key(self) -> dict[str, Any]:
        """The private JWK that signs new access tokens now (kid, alg included)."""
        return dict(self._keys[0])

    @property
    def kid(self) -> str:
        return str(self._keys[0]["kid"])

    def rotate_key(self, alg: str = "RS256", *, retire: bool = False) -> str:
        """Put a new signing key in front (published in the JWKS at once); with `retire`, drop
        the older ones from the JWKS too. The new key id."""
        key = signing_key(f"key-{secrets.token_hex(4)}", alg)
        response = self._http.post(
            f"{self.issuer}/__test__/keys", json={"keys": [key], "retire": retire}
        )
        assert response.status_code == 200, response.text
        self._keys = [key] if retire else [key, *self._keys]
        return str(key["kid"])

    @property
    def public_key_pem(self) -> bytes:
        """The current signing key's public key as PEM: what an algorithm-confusion attack
        uses as an HMAC secret."""
        return self._private_key().as_pem(private=False)

    def _private_key(self) -> RSAKey | ECKey:
        key = self._keys[0]
        return RSAKey.import_key(key) if key["kty"] == "RSA" else ECKey.import_key(key)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """The claims of an access token of SERVICE for the archive, valid now, with
        `overrides` (None removes a claim)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": SERVICE,
            "client_id": SERVICE,
            "iat": now,
            "exp": now + ACCESS_TOKEN_TTL,
            "jti": secrets.token_hex(8),
            "scope": "pacs:read",
            **overrides,
        }
        return {k: v for k, v in claims.items() if v is not None}

    def sign(self, claims: Mapping[str, Any], *, header: Mapping[str, Any] | None = None) -> str:
        """A token signed with the provider's current private key, with the claims of
        `self.claims(**claims)` and the header the provider gives (kid, typ at+jwt) updated
        with `header`: for tokens the provider would not issue (expired, not yet valid...)."""
        key = self._keys[0]
        protected = {"alg": key["alg"], "kid": key["kid"], "typ": "at+jwt", **(header or {})}
        payload = self.claims(**claims)
        return jwt.encode(protected, payload, self._private_key(), algorithms=[protected["alg"]])

    def sign_hmac(self, claims: Mapping[str, Any], secret: bytes, alg: str = "HS256") -> str:
        """A token MACed with `secret` (e.g. `public_key_pem`) under the current key's kid,
        built by hand: JOSE libraries rightly refuse a public key as an HMAC secret."""
        digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
        header = {"alg": alg, "kid": self.kid, "typ": "at+jwt"}
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode())
            for part in (header, self.claims(**claims))
        )
        mac = hmac.new(secret, signing_input.encode(), digest).digest()
        return f"{signing_input}.{_b64url(mac)}"

    # --- tokens ---------------------------------------------------------------------------------

    def token_response(
        self,
        client: str = SERVICE,
        scopes: Sequence[str] | None = ("pacs:read",),
        *,
        secret: str | None = None,
        **asked: Unpack[TokenClaims],
    ) -> httpx.Response:
        """The token endpoint's answer to a client credentials request of `client`
        (authenticated with its secret, or with `secret`)."""
        found = self.clients[client]
        secret = secret or found.secret
        assert secret is not None, f"{client} is a public client"
        form: dict[str, str] = {"grant_type": "client_credentials"}
        if scopes is not None:
            form["scope"] = " ".join(scopes)
        if (tenants := asked.get("tenants")) is not None:
            form["tenants"] = json.dumps(tenants)
        if extra_claims := asked.get("extra_claims"):
            form["extra_claims"] = json.dumps(dict(extra_claims))
        if (resource := asked.get("resource")) is not None:
            form["resource"] = resource
        return self._http.post(self.discovery()["token_endpoint"], data=form, auth=(client, secret))

    def token(
        self,
        client: str = SERVICE,
        scopes: Sequence[str] | None = ("pacs:read",),
        **asked: Unpack[TokenClaims],
    ) -> str:
        """An access token (a JWT) for `client` with `scopes` and, when given, this tenants
        claim (a list, or a string such as "*"); without, the client's own (none by default:
        the default tenant only). For another resource server with `resource`."""
        response = self.token_response(client, scopes, **asked)
        assert response.status_code == 200, f"token for {client}: {response.text}"
        token: str = response.json()["access_token"]
        return token

    def sign_in(
        self,
        username: str,
        password: str | None = None,
        *,
        client: str = WEB,
        scopes: Sequence[str] = ("pacs:read",),
        code_verifier: str | None = None,
    ) -> httpx.Response:
        """A user's sign-in as a browser makes it, without one: the authorization request
        (with PKCE), the login page, the code from the redirect, and the token endpoint's
        answer to the code, sent with `code_verifier` (by default the right one). The password
        is the account's unless given; a refused one raises SignInRefused."""
        (redirect_uri, *_) = self.clients[client].redirect_uris
        verifier = secrets.token_urlsafe(48)
        digest = hashlib.sha256(verifier.encode()).digest()
        state = secrets.token_urlsafe(16)
        discovery = self.discovery()
        # A client of its own: the provider's cookies are this "browser's" session.
        with httpx.Client(timeout=30) as browser:
            response = browser.get(
                discovery["authorization_endpoint"],
                params={
                    "client_id": client,
                    "response_type": "code",
                    "redirect_uri": redirect_uri,
                    "scope": " ".join(["openid", *scopes]),
                    "state": state,
                    "code_challenge": _b64url(digest),
                    "code_challenge_method": "S256",
                },
            )
            # authorization -> login page -> authorization -> consent -> ... -> the client
            for _ in range(10):
                location = response.headers.get("location", "")
                if response.is_redirect and location.startswith(redirect_uri):
                    break
                if response.is_redirect:
                    response = browser.get(response.url.join(location))
                elif response.status_code == 200 and "/interaction/" in response.url.path:
                    response = browser.post(
                        f"{response.url}/login",
                        data={
                            "username": username,
                            "password": password or self.accounts[username].password,
                        },
                    )
                    if response.status_code != 303:
                        raise SignInRefused(f"{response.status_code}: {response.text[:300]}")
                else:
                    raise AssertionError(f"sign-in stopped at {response.url}: {response.text}")
            query = parse_qs(urlsplit(location).query)
            assert query.get("state") == [state], location
            assert "code" in query, f"no code: {location}"
            return browser.post(
                discovery["token_endpoint"],
                data={
                    "grant_type": "authorization_code",
                    "code": query["code"][0],
                    "redirect_uri": redirect_uri,
                    "client_id": client,
                    "code_verifier": code_verifier or verifier,
                },
            )

    def user_token(self, username: str, scopes: Sequence[str] = ("pacs:read",)) -> str:
        """An access token of a user (authorization code with PKCE through the login page):
        its sub is the username, its tenants claim the account's."""
        response = self.sign_in(username, scopes=scopes)
        assert response.status_code == 200, f"sign-in of {username}: {response.text}"
        token: str = response.json()["access_token"]
        return token

    def archive_env(self, **overrides: str) -> dict[str, str]:
        """The PACS_* variables of a `pacs serve` that requires this provider's tokens."""
        return {
            "PACS_OIDC_ISSUER": self.issuer,
            "PACS_OIDC_AUDIENCE": self.audience,
            "PACS_OIDC_PERMISSIONS_CLAIM": "scope",
            "PACS_OIDC_TENANTS_CLAIM": TENANTS_CLAIM,
            **overrides,
        }


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def find_node() -> str:
    """Node.js with the runner's node_modules, or skip (fail in CI) saying what is missing."""
    node = shutil.which("node")
    require(node is not None, f"Node.js is not installed; {SETUP_HINT}")
    installed = RUNNER_DIR / "node_modules" / "oidc-provider" / "package.json"
    require(installed.is_file(), f"oidc-provider is not installed in {RUNNER_DIR}; {SETUP_HINT}")
    assert node is not None
    return node


def _discovery_answers(issuer: str) -> bool:
    try:
        response = httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=1)
    except httpx.TransportError:
        return False
    return response.status_code == 200


@contextmanager
def running_provider(
    directory: Path,
    clients: Sequence[Client] | None = None,
    accounts: Sequence[Account] | None = None,
    *,
    port: int | None = None,
) -> Iterator[OpenIdProvider]:
    """Start a provider on `port` (a free one by default) with `clients` and `accounts`
    (default_clients() and default_accounts() when not given); its configuration, keys
    included, and its log go to `directory`."""
    node = find_node()
    clients = default_clients() if clients is None else clients
    accounts = default_accounts() if accounts is None else accounts
    port = port or free_port()
    issuer = f"http://127.0.0.1:{port}"
    keys = [signing_key(f"key-{secrets.token_hex(4)}")]
    config = {
        "host": "127.0.0.1",
        "port": port,
        "issuer": issuer,
        "resources": [
            {"audience": AUDIENCE, "scope": " ".join(PERMISSIONS)},
            {"audience": OTHER_AUDIENCE, "scope": " ".join(PERMISSIONS)},
        ],
        "access_token_ttl": ACCESS_TOKEN_TTL,
        "tenants_claim": TENANTS_CLAIM,
        "cookie_keys": [secrets.token_urlsafe(32)],
        "clients": [c.metadata() for c in clients],
        "accounts": {a.username: a.entry() for a in accounts},
        "jwks": {"keys": keys},
    }
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "oidc-provider.json"
    config_path.write_text(json.dumps(config, indent=2))
    command = [node, str(RUNNER_DIR / "server.mjs"), str(config_path)]
    with background_process(
        command, directory / "oidc-provider.log", lambda: _discovery_answers(issuer)
    ):
        provider = OpenIdProvider(issuer, clients, accounts, keys)
        try:
            yield provider
        finally:
            provider.close()
