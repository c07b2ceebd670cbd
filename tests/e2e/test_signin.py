"""Sign-in against a real OpenID provider (tests/support/oidc.py): every route of the route
table refuses anonymous and untrusted callers, a token matrix gets the right 401 or 403 on
every route, valid tokens get in, and what a token grants (permission, tenant) is enforced
without telling a caller who may not see a study whether it exists.

The route table is read from the application itself, so a route added later is covered
without editing this file."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.jwk import RSAKey
from pydicom.uid import generate_uid
from starlette.routing import BaseRoute, Mount, Route

from app.web.app import create_app
from tests.support.dcmtk import require_dcmtk, run
from tests.support.dicom_factory import make_file
from tests.support.oidc import (
    SERVICE,
    SHORT_LIVED,
    SHORT_TTL,
    OpenIdProvider,
    running_provider,
)
from tests.support.server import free_port, running_server

# Path parameters of the walk: well-formed values, so that a route refusing them would be
# answering for the value, not for the caller.
STUDY = "1.2.826.0.1.3680043.10.1000.1"
SERIES = STUDY + ".1"
SOP = SERIES + ".1"
_PARAMS = {
    "study": STUDY,
    "series": SERIES,
    "instance": SOP,
    "frames": "1",
    "path": "7FE00010",
    "tenant": "default",
    "id": "1",  # a webhook subscription
}
PUBLIC = {("GET", "/health")}


def _walk(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    for route in routes:
        if isinstance(route, Mount):
            yield from _walk(list(route.routes), prefix + route.path)
        elif isinstance(route, Route):
            path = prefix + route.path
            for name, value in _PARAMS.items():
                path = path.replace(f"{{{name}:path}}", value).replace(f"{{{name}}}", value)
            assert "{" not in path, f"a path parameter this test does not know: {path}"
            for method in sorted(route.methods or {"GET"}):
                if method != "HEAD":
                    yield method, path


def _route_table() -> list[tuple[str, str]]:
    app: Any = create_app(_unused)
    while not hasattr(app, "router"):  # unwrap the middleware around the Starlette app
        app = app.app
    return sorted(set(_walk(list(app.router.routes))))


def _unused() -> Any:
    raise AssertionError("only the route table is read")


ROUTES = _route_table()
GUARDED = [r for r in ROUTES if r not in PUBLIC]


def _send(client: httpx.Client, method: str, path: str, token: str | None) -> httpx.Response:
    headers = {"Origin": "http://viewer.test"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if method == "POST":
        headers["Content-Type"] = "application/dicom"
        return client.post(path, headers=headers, content=b"")
    return client.request(method, path, headers=headers)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.fixture(scope="module")
def archive(
    oidc_provider: OpenIdProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An archive that requires the provider's tokens; its base URL."""
    data = tmp_path_factory.mktemp("signin")
    with running_server(data, env=oidc_provider.archive_env()) as url:
        yield url


@pytest.fixture
def http(archive: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=archive, timeout=30) as client:
        yield client


def test_the_walk_covers_the_route_table() -> None:
    paths = {p for _, p in ROUTES}
    assert ("POST", "/dicomweb/studies") in ROUTES
    assert ("GET", "/dicomweb/audit") in ROUTES
    assert {"/wado", "/dicomweb/wado", "/dicomweb/tenants/default/wado"} <= paths
    assert f"/dicomweb/tenants/default/studies/{STUDY}/series/{SERIES}/metadata" in paths
    assert len(GUARDED) > 50


@pytest.mark.parametrize(("method", "path"), GUARDED)
def test_anonymous_callers_get_401_on_every_route(
    http: httpx.Client, method: str, path: str
) -> None:
    response = _send(http, method, path, None)
    assert response.status_code == 401, response.text
    # RFC 6750 3.1: no error code when the request carried no credentials at all.
    assert response.headers["www-authenticate"] == 'Bearer realm="pacs"'
    assert "needs a bearer token" in response.json()["error"]
    # A browser client can read the refusal (CORS on every response).
    assert response.headers["access-control-allow-origin"] == "*"


def test_health_stays_public(http: httpx.Client) -> None:
    assert http.get("/health").status_code == 200


def _unknown_key_token(provider: OpenIdProvider) -> str:
    key = RSAKey.generate_key(2048, parameters={"kid": "not-published"}, private=True)
    header = {"alg": "RS256", "kid": "not-published", "typ": "at+jwt"}
    return jwt.encode(header, provider.claims(), key, algorithms=["RS256"])


def _forged_header(provider: OpenIdProvider, header: dict[str, Any]) -> str:
    return f"{_b64(header)}.{_b64(provider.claims())}.c2ln"


def _deeply_nested() -> str:
    """A header that makes a JSON parser recurse past Python's limit (a 500 once)."""
    nested = ("[" * 1100 + "]" * 1100).encode()
    return f"{base64.urlsafe_b64encode(nested).decode().rstrip('=')}.e30.AA"


def _unsigned_token(provider: OpenIdProvider) -> str:
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(provider.claims())}."


@pytest.fixture(scope="module")
def bad_tokens(oidc_provider: OpenIdProvider) -> dict[str, tuple[str, str]]:
    """Tokens that must be refused with 401: name -> (token, what the message says)."""
    p = oidc_provider
    now = int(time.time())
    return {
        "garbage": ("not-a-token", "not a JWT"),
        "truncated": (p.token(scopes=["pacs:read"])[:-20], "signature does not verify"),
        "expired": (p.sign({"iat": now - 900, "exp": now - 300}), "expired"),
        "not yet valid": (p.sign({"nbf": now + 600}), "not valid yet"),
        "wrong issuer": (p.sign({"iss": "http://127.0.0.1:9/evil"}), "another issuer"),
        "wrong audience": (
            p.token(scopes=["pacs:read"], resource=p.other_audience),
            "another audience",
        ),
        "no subject": (p.sign({"sub": None}), "'sub' claim"),
        "alg none": (_unsigned_token(p), "algorithm 'none' is not accepted"),
        "HS256 keyed with the public key": (
            p.sign_hmac({"scope": "pacs:read pacs:write pacs:admin"}, p.public_key_pem),
            "algorithm 'HS256' is not accepted",
        ),
        "unknown kid": (_unknown_key_token(p), "a key the issuer does not publish"),
        "not an access token": (p.sign({}, header={"typ": "logout+jwt"}), "not an access token"),
        "an ID token (Keycloak's payload typ)": (p.sign({"typ": "ID"}), "not an access token"),
        "deeply nested header": (_deeply_nested(), "not base64url JSON"),
        # Header values that are not ASCII must not reach the WWW-Authenticate header.
        "non-ASCII alg": (_forged_header(p, {"alg": "\u20ac"}), "algorithm of this token"),
        "non-ASCII kid": (
            _forged_header(p, {"alg": "RS256", "kid": "\u20ac\n"}),
            "a key the issuer does not publish",
        ),
    }


@pytest.mark.parametrize(("method", "path"), GUARDED)
def test_untrusted_tokens_get_401_on_every_route(
    http: httpx.Client, bad_tokens: dict[str, tuple[str, str]], method: str, path: str
) -> None:
    for name, (token, message) in bad_tokens.items():
        response = _send(http, method, path, token)
        assert response.status_code == 401, (name, response.text)
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="pacs", error="invalid_token"'), name
        assert message in response.json()["error"], (name, response.json())


@pytest.fixture(scope="module")
def refused_tokens(oidc_provider: OpenIdProvider) -> dict[str, str]:
    """Valid tokens that grant nothing on the default tenant: name -> token."""
    every = ["pacs:read", "pacs:write", "pacs:delete", "pacs:admin"]
    return {
        "no permission": oidc_provider.token(scopes=[]),
        "another tenant": oidc_provider.token(scopes=every, tenants=["clinic-b"]),
    }


@pytest.mark.parametrize(("method", "path"), GUARDED)
def test_tokens_without_the_permission_or_tenant_get_403_on_every_route(
    http: httpx.Client, refused_tokens: dict[str, str], method: str, path: str
) -> None:
    for name, token in refused_tokens.items():
        response = _send(http, method, path, token)
        assert response.status_code == 403, (name, response.text)
        assert "insufficient_scope" in response.headers["www-authenticate"]
        assert "permission" in response.json()["error"] or "tenant" in response.json()["error"]


def _stow(http: httpx.Client, token: str, data: bytes, tenant: str | None = None) -> httpx.Response:
    root = f"/dicomweb/tenants/{tenant}" if tenant else "/dicomweb"
    return http.post(
        f"{root}/studies",
        content=data,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/dicom"},
    )


def test_valid_tokens_get_what_they_grant(
    oidc_provider: OpenIdProvider, http: httpx.Client
) -> None:
    study = generate_uid()
    data = make_file(study=study, PatientID="SIGNIN-1")
    reader = oidc_provider.token(scopes=["pacs:read"])
    writer = oidc_provider.token(scopes=["pacs:write"])
    assert _stow(http, reader, data).status_code == 403
    assert _stow(http, writer, data).status_code == 200
    auth = {"Authorization": f"Bearer {reader}"}
    found = http.get("/dicomweb/studies", params={"PatientID": "SIGNIN-1"}, headers=auth)
    assert found.status_code == 200
    assert [s["0020000D"]["Value"][0] for s in found.json()] == [study]
    assert http.get(f"/dicomweb/studies/{study}/metadata", headers=auth).status_code == 200
    # A writer may store but not read.
    auth = {"Authorization": f"Bearer {writer}"}
    assert http.get(f"/dicomweb/studies/{study}/metadata", headers=auth).status_code == 403


def test_a_refusal_never_tells_whether_a_study_exists(
    oidc_provider: OpenIdProvider, http: httpx.Client
) -> None:
    stored, absent = generate_uid(), generate_uid()
    writer = oidc_provider.token(scopes=["pacs:write"])
    assert _stow(http, writer, make_file(study=stored)).status_code == 200
    elsewhere = oidc_provider.token(scopes=["pacs:read"], tenants=["clinic-b"])
    auth = {"Authorization": f"Bearer {elsewhere}"}
    answers = [http.get(f"/dicomweb/studies/{uid}", headers=auth) for uid in (stored, absent)]
    assert [a.status_code for a in answers] == [403, 403]
    assert answers[0].json() == answers[1].json()
    # In its own tenant the study does not exist.
    path = f"/dicomweb/tenants/clinic-b/studies/{stored}/metadata"
    assert http.get(path, headers=auth).status_code == 404


def test_tenants_claim_lets_a_token_into_its_tenants_only(
    oidc_provider: OpenIdProvider, http: httpx.Client
) -> None:
    study = generate_uid()
    token = oidc_provider.token(scopes=["pacs:read", "pacs:write"], tenants=["north", "south"])
    assert _stow(http, token, make_file(study=study), tenant="north").status_code == 200
    auth = {"Authorization": f"Bearer {token}"}
    north = http.get(
        "/dicomweb/tenants/north/studies", params={"StudyInstanceUID": study}, headers=auth
    )
    south = http.get(
        "/dicomweb/tenants/south/studies", params={"StudyInstanceUID": study}, headers=auth
    )
    assert (north.status_code, len(north.json())) == (200, 1)
    assert (south.status_code, south.content) == (204, b"") or south.json() == []
    assert http.get("/dicomweb/tenants/east/studies", headers=auth).status_code == 403
    star = oidc_provider.token(scopes=["pacs:read"], tenants="*")
    auth = {"Authorization": f"Bearer {star}"}
    found = http.get(
        "/dicomweb/tenants/north/studies", params={"StudyInstanceUID": study}, headers=auth
    )
    assert len(found.json()) == 1


def test_an_ai_service_signs_in_with_client_credentials_through_authlib(
    oidc_provider: OpenIdProvider, archive: str
) -> None:
    """What an AI service does: authlib's OAuth 2.0 client fetches a token with the client
    credentials grant and sends it on every DICOMweb request."""
    client = oidc_provider.clients[SERVICE]
    endpoint = oidc_provider.discovery()["token_endpoint"]
    with OAuth2Session(client.client_id, client.secret, scope="pacs:read") as session:
        session.fetch_token(endpoint, grant_type="client_credentials")
        response = session.get(f"{archive}/dicomweb/studies", params={"limit": "1"})
    assert response.status_code == 200, response.text


def test_a_rotated_key_is_fetched_without_a_restart(tmp_path: Path) -> None:
    """Its own provider: rotating the shared one would change what other tests see."""
    with (
        running_provider(tmp_path / "idp") as provider,
        running_server(tmp_path / "data", env=provider.archive_env()) as url,
        httpx.Client(base_url=f"{url}/dicomweb") as http,
    ):
        before = provider.token(scopes=["pacs:read"])
        assert http.get("/studies", headers=_bearer(before)).status_code == 200
        time.sleep(2.1)  # the archive fetches the keys again at most every 2 s
        kid = provider.rotate_key()
        after = provider.token(scopes=["pacs:read"])
        assert json.loads(base64.urlsafe_b64decode(after.split(".")[0] + "=="))["kid"] == kid
        assert http.get("/studies", headers=_bearer(after)).status_code == 200
        # Tokens signed with the older key, still published, stay valid...
        assert http.get("/studies", headers=_bearer(before)).status_code == 200
        # ... until the issuer stops publishing it.
        time.sleep(2.1)
        newest = provider.rotate_key(retire=True)
        latest = provider.token(scopes=["pacs:read"])
        assert json.loads(base64.urlsafe_b64decode(latest.split(".")[0] + "=="))["kid"] == newest
        assert http.get("/studies", headers=_bearer(latest)).status_code == 200
        refused = http.get("/studies", headers=_bearer(before))
        assert refused.status_code == 401
        assert "a key the issuer does not publish" in refused.json()["error"]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_real_token_expires(oidc_provider: OpenIdProvider, tmp_path: Path) -> None:
    env = oidc_provider.archive_env(PACS_OIDC_LEEWAY_SECONDS="0")
    with running_server(tmp_path / "data", env=env) as url:
        token = oidc_provider.token(SHORT_LIVED, scopes=["pacs:read"])
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{url}/dicomweb/studies", headers=auth).status_code == 200
        time.sleep(SHORT_TTL + 1.5)
        refused = httpx.get(f"{url}/dicomweb/studies", headers=auth)
        assert refused.status_code == 401
        assert refused.json()["error"] == "the token has expired"


def test_tokens_signed_with_cached_keys_work_while_the_issuer_is_down(tmp_path: Path) -> None:
    with ExitStack() as archive:
        with running_provider(tmp_path / "idp") as provider:
            good = provider.token(scopes=["pacs:read"])
            forged = _unknown_key_token(provider)
            # The archive loads the issuer's keys at start.
            url = archive.enter_context(
                running_server(tmp_path / "data", env=provider.archive_env())
            )
        # The provider has stopped: known keys still verify, and an unknown kid is refused
        # as such (401) rather than blamed on the issuer (503), also inside the refetch
        # interval.
        auth = {"Authorization": f"Bearer {good}"}
        assert httpx.get(f"{url}/dicomweb/studies", headers=auth).status_code == 200
        time.sleep(2.1)  # past the refetch interval: the first forged token tries the issuer
        for _ in range(2):
            auth = {"Authorization": f"Bearer {forged}"}
            refused = httpx.get(f"{url}/dicomweb/studies", headers=auth)
            assert refused.status_code == 401, refused.text


def test_an_unreachable_issuer_stops_the_server_at_start(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "app.cli", "serve", "--data", str(tmp_path)]
    command += ["--port", str(free_port()), "--dimse-port", "0"]
    command += ["--oidc-issuer", f"http://127.0.0.1:{free_port()}", "--oidc-audience", "pacs"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].startswith("pacs: cannot read http://127.0.0.1:")
    assert "Traceback" not in done.stderr


# -- DIMSE ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dimse_archive(
    oidc_provider: OpenIdProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    """An archive with sign-in on, knowing one calling AE (WS1); its DIMSE port."""
    require_dcmtk()
    port = free_port()
    policy = "WS1=all from 127.0.0.1; FAR=all from 192.0.2.0/24"
    args = ["--dimse-port", str(port), "--dimse-ae-policy", policy]
    with running_server(
        tmp_path_factory.mktemp("signin-dimse"), *args, env=oidc_provider.archive_env()
    ):
        yield port


def test_unknown_calling_aes_get_nothing_but_a_rejected_association(
    dimse_archive: int, tmp_path: Path
) -> None:
    sample = tmp_path / "x.dcm"
    sample.write_bytes(make_file(study=generate_uid()))
    key = ["-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID"]
    calls = {
        "echoscu": [],
        "storescu": [],
        "findscu": ["-S", *key],
        "movescu": ["-S", "-aem", "WS1", *key],
        "getscu": ["-S", *key],
    }
    peer = ["127.0.0.1", str(dimse_archive)]
    for tool, args in calls.items():
        extra = [str(sample)] if tool == "storescu" else []
        done = run(tool, "-aet", "ANONYMOUS", "-aec", "PACS", *args, *peer, *extra)
        assert done.returncode != 0, (tool, done.stdout)
        assert "Association Rejected" in done.stdout, (tool, done.stdout)
    echo = run("echoscu", "-aet", "WS1", "-aec", "PACS", *peer)
    assert echo.returncode == 0, echo.stdout
    # A known AE title calling from an address its entry does not name may do nothing.
    echo = run("echoscu", "-v", "-aet", "FAR", "-aec", "PACS", *peer)
    assert "0x124" in echo.stdout, echo.stdout  # 0124 Refused: Not authorized
    find = run("findscu", "-v", "-aet", "FAR", "-aec", "PACS", "-S", *key, *peer)
    assert "0x124" in find.stdout or "Not authorized" in find.stdout, find.stdout
