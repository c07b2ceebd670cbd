"""HTTP behaviour around the transactions: CORS, proxies, health, routing errors."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from pydicom.uid import generate_uid

from tests.conformance.helpers import (
    REFERENCED_SOP_SEQUENCE,
    RETRIEVE_URL,
    error_message,
    items,
    stow,
    token,
    value,
)
from tests.support.dicom_factory import make_file
from tests.support.server import running_server

ORIGIN = "http://viewer.example.org:3000"


def _allowed(response: httpx.Response) -> bool:
    return response.headers.get("access-control-allow-origin") in ("*", ORIGIN)


# --- CORS -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "method", "request_headers"),
    [
        ("/dicomweb/studies", "GET", "accept"),
        ("/dicomweb/studies", "POST", "content-type"),
        ("/dicomweb/studies/1.2.3/series/4.5/instances/6.7/frames/1", "GET", "accept"),
        ("/dicomweb/studies/1.2.3", "GET", None),
    ],
)
def test_cors_preflight(server: str, path: str, method: str, request_headers: str | None) -> None:
    headers = {"Origin": ORIGIN, "Access-Control-Request-Method": method}
    if request_headers:
        headers["Access-Control-Request-Headers"] = request_headers
    response = httpx.options(f"{server}{path}", headers=headers)
    assert response.status_code == 200, response.text
    assert _allowed(response), response.headers
    allowed_methods = response.headers.get("access-control-allow-methods", "")
    assert method in [m.strip() for m in allowed_methods.split(",")] or allowed_methods == "*"
    if request_headers:
        allowed_headers = response.headers.get("access-control-allow-headers", "").lower()
        assert request_headers in allowed_headers or allowed_headers == "*"


def test_cors_on_success_and_on_errors(http: httpx.Client) -> None:
    origin = {"Origin": ORIGIN}
    cases = [
        ("GET", "/studies?limit=1", None, 200),
        ("GET", f"/studies/{generate_uid()}", None, 404),
        ("GET", f"/studies/{generate_uid()}/metadata", None, 404),
        ("GET", "/studies?NoSuchKey=1", None, 400),
        ("GET", "/studies/abc", None, 400),
        ("GET", "/studies?limit=1", "application/dicom+xml", 406),
        ("GET", "/no/such/resource", None, 404),
    ]
    for method, url, accept, status in cases:
        headers = dict(origin)
        if accept:
            headers["Accept"] = accept
        response = http.request(method, url, headers=headers)
        assert response.status_code == status, (url, response.text)
        assert _allowed(response), (url, response.headers)
    response = http.post("/studies", content=b"x", headers={**origin, "Content-Type": "text/plain"})
    assert response.status_code == 415
    assert _allowed(response)
    response = http.post(
        "/studies", content=b"junk", headers={**origin, "Content-Type": "application/dicom"}
    )
    assert response.status_code == 409
    assert _allowed(response)


def test_cors_exposes_headers_a_viewer_reads(http: httpx.Client) -> None:
    response = http.get("/studies?limit=1", headers={"Origin": ORIGIN})
    exposed = response.headers.get("access-control-expose-headers", "").lower()
    assert "content-type" in exposed or exposed == "*"


# --- reverse proxies --------------------------------------------------------------------------

# The proxy's address: the loopback network is 127.0.0.0/8, so a client bound to 127.0.0.2
# is a different peer from one on 127.0.0.1 on the same machine.
PROXY = "127.0.0.2"


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An archive that trusts every X-Forwarded-* header of PROXY only."""
    env = {
        "PACS_TRUSTED_PROXIES": f"{PROXY}/32, 10.0.0.0/8",
        "PACS_TRUSTED_PROXY_HEADERS": "x-forwarded",
    }
    with running_server(tmp_path_factory.mktemp("proxied"), env=env) as url:
        yield url


@pytest.fixture(scope="module")
def proxied_rfc7239(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An archive that trusts the `Forwarded` headers of PROXY only."""
    env = {
        "PACS_TRUSTED_PROXIES": f"{PROXY}/32, 10.0.0.0/8",
        "PACS_TRUSTED_PROXY_HEADERS": "forwarded",
    }
    with running_server(tmp_path_factory.mktemp("proxied-rfc7239"), env=env) as url:
        yield url


def client(url: str, local_address: str = PROXY) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=local_address)
    return httpx.Client(base_url=f"{url}/dicomweb", transport=transport, timeout=60)


@pytest.mark.parametrize(
    ("headers", "base"),
    [
        (
            {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "pacs.example.org"},
            "https://pacs.example.org/dicomweb",
        ),
        (
            {
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "pacs.example.org:8443",
                "X-Forwarded-Prefix": "/archive",
            },
            "https://pacs.example.org:8443/archive/dicomweb",
        ),
        (
            {"Forwarded": 'for=192.0.2.60;proto=https;host="images.example.com"'},
            "https://images.example.com/dicomweb",
        ),
        (
            # Two trusted proxies: the outer one (10.1.2.3) saw what the client asked for.
            {
                "Forwarded": "for=192.0.2.60;proto=https;host=a.example.com, "
                "for=10.1.2.3;proto=http;host=internal:8080"
            },
            "https://a.example.com/dicomweb",
        ),
        (
            # A client's own Forwarded element ahead of an untrusted hop is not believed.
            {
                "Forwarded": "for=192.0.2.60;host=evil.example.com, "
                "for=203.0.113.9;proto=https;host=b.example.com"
            },
            "https://b.example.com/dicomweb",
        ),
        (
            {
                "X-Forwarded-For": "192.0.2.60, 10.1.2.3",
                "X-Forwarded-Proto": "https, http",
                "X-Forwarded-Host": "c.example.com, internal:8080",
            },
            "https://c.example.com/dicomweb",
        ),
        (
            # Regression: a client's own Forwarded header, which an X-Forwarded-* proxy such
            # as nginx passes on, beat the proxy's headers.
            {
                "X-Forwarded-For": "192.0.2.60",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "d.example.com",
                "Forwarded": "for=198.51.100.1;proto=http;host=evil.example.com",
            },
            "https://d.example.com/dicomweb",
        ),
    ],
    ids=[
        "x-forwarded",
        "x-forwarded-prefix",
        "forwarded",
        "forwarded-chain",
        "forwarded-spoofed-ahead",
        "x-forwarded-chain",
        "x-forwarded-beats-a-clients-forwarded",
    ],
)
def test_forwarded_headers_of_a_trusted_proxy_change_urls(
    request: pytest.FixtureRequest, headers: dict[str, str], base: str
) -> None:
    # X-Forwarded-* cases go to the default archive, `Forwarded` ones to the RFC 7239 one.
    rfc7239 = "X-Forwarded-Host" not in headers
    proxied: str = request.getfixturevalue("proxied_rfc7239" if rfc7239 else "proxied")
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    patient = token()
    data = make_file(study=study, series=series, sop=sop, PatientID=patient)
    instance = f"{base}/studies/{study}/series/{series}/instances/{sop}"

    with client(proxied) as http:
        stored = stow(http, [data], headers=headers)
        assert stored.status_code == 200, stored.text
        body = stored.json()
        assert value(body, RETRIEVE_URL) == f"{base}/studies/{study}"
        [item] = items(body, REFERENCED_SOP_SEQUENCE)
        assert value(item, RETRIEVE_URL) == instance

        [found] = http.get("/studies", params={"PatientID": patient}, headers=headers).json()
        assert value(found, RETRIEVE_URL) == f"{base}/studies/{study}"
        [found] = http.get(f"/studies/{study}/series", headers=headers).json()
        assert value(found, RETRIEVE_URL) == f"{base}/studies/{study}/series/{series}"
        [found] = http.get("/instances", params={"PatientID": patient}, headers=headers).json()
        assert value(found, RETRIEVE_URL) == instance

        [meta] = http.get(f"/studies/{study}/metadata", headers=headers).json()
        assert meta["7FE00010"]["BulkDataURI"].startswith(instance + "/")

        # Without the headers, the URLs name the server itself.
        [meta] = http.get(f"/studies/{study}/metadata").json()
        assert meta["7FE00010"]["BulkDataURI"].startswith(f"{proxied}/dicomweb/studies/")


SPOOFED = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "evil.example.com",
    "X-Forwarded-Prefix": "/phish",
    "Forwarded": "proto=https;host=evil.example.com",
}


@pytest.mark.parametrize("where", ["untrusted peer", "nothing trusted"])
def test_forwarded_headers_of_anyone_else_are_ignored(
    proxied: str, server: str, where: str
) -> None:
    """A client on 127.0.0.1 is not the trusted proxy; the shared archive trusts nobody
    (the default), not even 127.0.0.1, which uvicorn would trust by default."""
    url = proxied if where == "untrusted peer" else server
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    data = make_file(study=study, series=series, sop=sop, PatientID=token())
    with client(url, "127.0.0.1") as http:
        stored = stow(http, [data], headers=SPOOFED)
        assert stored.status_code == 200, stored.text
        assert value(stored.json(), RETRIEVE_URL) == f"{url}/dicomweb/studies/{study}"
        [meta] = http.get(f"/studies/{study}/metadata", headers=SPOOFED).json()
        uri = meta["7FE00010"]["BulkDataURI"]
        assert uri.startswith(f"{url}/dicomweb/studies/{study}/series/{series}/"), uri


def test_untrusted_host_header_cannot_break_out_of_the_url(server: str) -> None:
    """A Host header is the client's word; one that is not a host[:port] is not used."""
    study = generate_uid()
    with client(server, "127.0.0.1") as http:
        stored = stow(http, [make_file(study=study)], headers={"Host": "evil.example.com/x?y="})
    assert stored.status_code in (200, 400), stored.text
    if stored.status_code == 200:
        assert "evil.example.com" not in value(stored.json(), RETRIEVE_URL)


# --- health and routing -----------------------------------------------------------------------


def test_health(server: str) -> None:
    response = httpx.get(f"{server}/health")
    assert response.status_code == 200
    assert response.json()


@pytest.mark.parametrize(
    "path",
    ["/no-such-thing", "/dicomweb/nonsense", "/dicomweb/studies/1.2.3/frames/1"],
)
def test_unknown_path_is_404_json(server: str, path: str) -> None:
    response = httpx.get(f"{server}{path}")
    assert response.status_code == 404, response.text
    assert error_message(response)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/dicomweb/studies", {"GET", "POST"}),
        ("POST", "/dicomweb/series", {"GET"}),
        ("PATCH", "/dicomweb/instances", {"GET"}),
        ("POST", "/health", {"GET"}),
    ],
)
def test_wrong_method_is_405(server: str, method: str, path: str, allowed: set[str]) -> None:
    response = httpx.request(method, f"{server}{path}", content=b"")
    assert response.status_code == 405, response.text
    message = error_message(response)
    assert method in message
    # RFC 9110 15.5.6: a 405 response MUST carry an Allow header listing the methods.
    allow = {m.strip() for m in response.headers.get("allow", "").split(",") if m.strip()}
    assert allowed <= allow, response.headers
