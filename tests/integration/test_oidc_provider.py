"""The OpenID Provider the sign-in tests use (tests/support/oidc.py) is what they take it for:
its tokens are JWTs signed with the keys it publishes, with the claims the archive reads, its
keys rotate at run time, and short-lived tokens do expire."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from joserfc import jwt
from joserfc.errors import BadSignatureError, ExpiredTokenError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from tests.support.oidc import (
    AUDIENCE,
    OTHER_AUDIENCE,
    SERVICE,
    SHORT_LIVED,
    SHORT_TTL,
    TENANTS_CLAIM,
    WEB,
    OpenIdProvider,
    SignInRefused,
    running_provider,
)


def verified(provider: OpenIdProvider, token: str, keys: KeySet | None = None) -> jwt.Token:
    """The token decoded with the provider's published keys and its claims validated."""
    decoded = jwt.decode(token, keys or provider.key_set(), algorithms=["RS256", "ES256"])
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": provider.issuer},
        aud={"essential": True, "value": provider.audience},
        exp={"essential": True},
        iat={"essential": True},
        sub={"essential": True},
    ).validate(decoded.claims)
    return decoded


def test_discovery_names_the_issuer_and_its_endpoints(oidc_provider: OpenIdProvider) -> None:
    discovery = oidc_provider.discovery()
    assert discovery["issuer"] == oidc_provider.issuer
    for endpoint in ("jwks_uri", "token_endpoint", "authorization_endpoint"):
        assert discovery[endpoint].startswith(f"{oidc_provider.issuer}/"), endpoint
    assert "client_credentials" in discovery["grant_types_supported"]
    assert "authorization_code" in discovery["grant_types_supported"]
    assert discovery["code_challenge_methods_supported"] == ["S256"]


def test_published_keys_are_public(oidc_provider: OpenIdProvider) -> None:
    keys = oidc_provider.jwks()["keys"]
    assert [k["kid"] for k in keys] == [oidc_provider.kid]
    private = {"d", "p", "q", "dp", "dq", "qi"}
    assert all(not private & set(k) for k in keys), keys
    assert private <= set(oidc_provider.signing_key)


def test_client_credentials_token_is_a_signed_jwt_for_the_archive(
    oidc_provider: OpenIdProvider,
) -> None:
    token = oidc_provider.token(SERVICE, ["pacs:read", "pacs:write"])
    decoded = verified(oidc_provider, token)
    assert decoded.header["alg"] == "RS256"
    assert decoded.header["kid"] == oidc_provider.kid
    claims = decoded.claims
    assert claims["iss"] == oidc_provider.issuer
    assert claims["aud"] == AUDIENCE == oidc_provider.audience
    assert claims["sub"] == claims["client_id"] == SERVICE
    assert claims["scope"].split() == ["pacs:read", "pacs:write"]
    assert TENANTS_CLAIM not in claims  # not asked for: the default tenant only
    assert 0 < claims["exp"] - claims["iat"] <= 300


@pytest.mark.parametrize("tenants", [["north", "south"], "*", "north south"])
def test_tenants_claim_is_as_asked(oidc_provider: OpenIdProvider, tenants: Any) -> None:
    token = oidc_provider.token(SERVICE, ["pacs:read"], tenants=tenants)
    assert verified(oidc_provider, token).claims[TENANTS_CLAIM] == tenants


def test_extra_claims_reach_the_token(oidc_provider: OpenIdProvider) -> None:
    roles = {"realm_access": {"roles": ["pacs:read", "pacs:admin"]}}
    token = oidc_provider.token(SERVICE, None, extra_claims=roles)
    claims = verified(oidc_provider, token).claims
    assert claims["realm_access"] == roles["realm_access"]
    assert "scope" not in claims


def test_unknown_scope_is_left_out(oidc_provider: OpenIdProvider) -> None:
    token = oidc_provider.token(SERVICE, ["pacs:read", "pacs:everything"])
    assert verified(oidc_provider, token).claims["scope"] == "pacs:read"


def test_a_wrong_client_secret_is_refused(oidc_provider: OpenIdProvider) -> None:
    response = oidc_provider.token_response(SERVICE, secret="not-the-secret")
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_another_resource_server_gets_its_own_audience(oidc_provider: OpenIdProvider) -> None:
    token = oidc_provider.token(SERVICE, ["pacs:read"], resource=OTHER_AUDIENCE)
    decoded = jwt.decode(token, oidc_provider.key_set())
    assert decoded.claims["aud"] == OTHER_AUDIENCE


def test_forged_token_verifies_with_the_published_key(oidc_provider: OpenIdProvider) -> None:
    now = int(time.time())
    token = oidc_provider.sign({"nbf": now + 3600, "scope": "pacs:admin"})
    decoded = jwt.decode(token, oidc_provider.key_set())
    assert decoded.header["kid"] == oidc_provider.kid
    assert decoded.claims["nbf"] == now + 3600


def test_forged_claims_can_be_removed(oidc_provider: OpenIdProvider) -> None:
    token = oidc_provider.sign({"exp": None, "sub": None})
    claims = jwt.decode(token, oidc_provider.key_set()).claims
    assert "exp" not in claims and "sub" not in claims and claims["iss"] == oidc_provider.issuer


def test_hmac_token_keyed_with_the_public_key(oidc_provider: OpenIdProvider) -> None:
    pem = oidc_provider.public_key_pem
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    token = oidc_provider.sign_hmac({"scope": "pacs:admin"}, pem)
    signing_input, _, mac = token.rpartition(".")
    expected = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4)) == expected
    header = json.loads(base64.urlsafe_b64decode(signing_input.split(".")[0] + "=="))
    assert header == {"alg": "HS256", "kid": oidc_provider.kid, "typ": "at+jwt"}
    with pytest.raises(JoseError):  # not an RS256 signature of the provider's key
        jwt.decode(token, oidc_provider.key_set(), algorithms=["RS256"])


def test_rotation_signs_with_a_new_key_and_keeps_the_old_one_published(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with running_provider(tmp_path_factory.mktemp("oidc-rotation")) as provider:
        first = provider.kid
        before = provider.token()
        old_keys = provider.key_set()
        second = provider.rotate_key()
        assert second != first
        after = provider.token()
        assert verified(provider, after).header["kid"] == second
        with pytest.raises(InvalidKeyIdError):
            jwt.decode(after, old_keys)  # a verifier must fetch the JWKS again
        assert [k["kid"] for k in provider.jwks()["keys"]] == [second, first]
        assert verified(provider, before).header["kid"] == first

        third = provider.rotate_key("ES256", retire=True)
        assert [k["kid"] for k in provider.jwks()["keys"]] == [third]
        latest = provider.token()
        assert verified(provider, latest).header == {"alg": "ES256", "typ": "at+jwt", "kid": third}
        with pytest.raises(InvalidKeyIdError):
            jwt.decode(before, provider.key_set())


def test_token_signed_by_another_key_does_not_verify(oidc_provider: OpenIdProvider) -> None:
    token = oidc_provider.token()
    header, payload, signature = token.split(".")
    other = oidc_provider.token(scopes=["pacs:write"]).split(".")[2]
    with pytest.raises(BadSignatureError):
        jwt.decode(f"{header}.{payload}.{other}", oidc_provider.key_set())
    assert signature != other


def test_short_lived_token_expires(oidc_provider: OpenIdProvider) -> None:
    token = oidc_provider.token(SHORT_LIVED, ["pacs:read"])
    claims = verified(oidc_provider, token).claims
    assert claims["exp"] - claims["iat"] == SHORT_TTL
    time.sleep(max(claims["exp"] - time.time(), 0) + 1.1)
    with pytest.raises(ExpiredTokenError):
        verified(oidc_provider, token)


@pytest.mark.parametrize("username", ["reader", "two-sites", "everywhere"])
def test_user_signs_in_with_pkce_and_gets_their_own_token(
    oidc_provider: OpenIdProvider, username: str
) -> None:
    response = oidc_provider.sign_in(username, scopes=["pacs:read", "pacs:write"])
    assert response.status_code == 200, response.text
    answer = response.json()
    claims = verified(oidc_provider, answer["access_token"]).claims
    assert claims["sub"] == username
    assert claims["client_id"] == WEB
    assert claims["scope"].split() == ["pacs:read", "pacs:write"]
    assert claims.get(TENANTS_CLAIM) == oidc_provider.accounts[username].tenants
    identity = jwt.decode(answer["id_token"], oidc_provider.key_set()).claims
    assert identity["sub"] == username and identity["aud"] == WEB


@pytest.mark.parametrize("username", ["reader", "nobody"])
def test_wrong_password_is_refused_on_the_login_page(
    oidc_provider: OpenIdProvider, username: str
) -> None:
    with pytest.raises(SignInRefused, match=r"(?s)^401: .*Wrong username or password"):
        oidc_provider.sign_in(username, "not-the-password")


def test_code_without_its_verifier_is_refused(oidc_provider: OpenIdProvider) -> None:
    response = oidc_provider.sign_in("reader", code_verifier="x" * 43)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
