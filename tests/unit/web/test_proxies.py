"""Which origin the archive's links get: from the request, from a trusted proxy's headers,
or PACS_PUBLIC_URL; table-driven over requests built from ASGI scopes."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection, Request

from app.web import proxies
from app.web.proxies import LinkSettings, ProxyHeaders, client_address, request_origin
from app.web.urls import base_url

# Proxies that set every X-Forwarded-* header (PACS_TRUSTED_PROXY_HEADERS=x-forwarded).
TRUSTED = LinkSettings(
    (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")),
    x_forwarded=frozenset({"for", "proto", "host", "prefix"}),
)
# The same proxies, setting RFC 7239 `Forwarded` headers.
TRUSTED_RFC7239 = LinkSettings(TRUSTED.trusted_proxies, proxy_headers=ProxyHeaders.FORWARDED)


def request(
    headers: dict[str, str] | list[tuple[str, str]],
    *,
    peer: str = "10.0.0.5",
    scheme: str = "http",
    links: LinkSettings = TRUSTED,
    root_path: str = "/dicomweb",
) -> Request:
    app = Starlette()
    app.state.links = links
    pairs = list(headers.items()) if isinstance(headers, dict) else headers
    scope = {
        "type": "http",
        "method": "GET",
        "scheme": scheme,
        "server": ("127.0.0.1", 8080),
        "client": (peer, 51000),
        "path": f"{root_path}/studies",
        "root_path": root_path,
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in pairs],
        "app": app,
    }
    return Request(scope)


HOST = {"Host": "pacs.local:8080"}
DIRECT = "http://pacs.local:8080/dicomweb"
PROXY, OTHER = "10.0.0.5", "192.0.2.1"  # a trusted peer, an untrusted one


@pytest.mark.parametrize(
    ("headers", "peer", "expected"),
    [
        # Direct: the Host header, with its port.
        ({}, OTHER, DIRECT),
        # An untrusted peer's forwarded headers are ignored, whichever kind.
        ({"X-Forwarded-Host": "evil.org"}, OTHER, DIRECT),
        ({"Forwarded": "host=evil.org;proto=https"}, OTHER, DIRECT),
        ({"X-Forwarded-Prefix": "/x"}, OTHER, DIRECT),
        # A trusted one's are used, IPv6 and IPv4-mapped peers too.
        ({"X-Forwarded-Host": "a.org", "X-Forwarded-Proto": "https"}, PROXY, "https://a.org/dicomweb"),
        ({"X-Forwarded-Host": "a.org"}, "2001:db8::7", "http://a.org/dicomweb"),
        ({"X-Forwarded-Host": "a.org"}, "::ffff:10.1.1.1", "http://a.org/dicomweb"),
        (
            {"Forwarded": 'for="[2001:db8::9]:4711";host="[2001:db8::1]:8443";proto=https'},
            PROXY,
            "https://[2001:db8::1]:8443/dicomweb",
        ),
        ({"X-Forwarded-Prefix": "/pacs/"}, PROXY, "http://pacs.local:8080/pacs/dicomweb"),
        # Values that are not a host, a scheme or a path are not used.
        ({"X-Forwarded-Host": "evil.org/x?"}, PROXY, DIRECT),
        ({"X-Forwarded-Proto": "javascript"}, PROXY, DIRECT),
        ({"X-Forwarded-Prefix": "//evil.org"}, PROXY, DIRECT),
        ({"Host": "a b"}, OTHER, "http://127.0.0.1:8080/dicomweb"),
        # Chains, right to left while the hop was added by a trusted proxy.
        ({"Forwarded": "for=192.0.2.9;host=a.org, for=10.2.2.2;host=b"}, PROXY, "http://a.org/dicomweb"),
        ({"Forwarded": "for=192.0.2.9;host=a.org, for=_hidden;host=b"}, PROXY, "http://b/dicomweb"),
        ({"X-Forwarded-For": "192.0.2.9, 10.2.2.2", "X-Forwarded-Host": "a.org"}, PROXY, "http://a.org/dicomweb"),
        ({"X-Forwarded-For": "192.0.2.9, 198.51.100.1", "X-Forwarded-Host": "x.org, a.org"}, PROXY, "http://a.org/dicomweb"),
    ],
)  # fmt: skip
def test_base_url(headers: dict[str, str], peer: str, expected: str) -> None:
    links = TRUSTED_RFC7239 if "Forwarded" in headers else TRUSTED
    assert base_url(request({**HOST, **headers}, peer=peer, links=links)) == expected


def test_forwarded_headers_repeated_are_one_list() -> None:
    headers = [
        ("Host", "h"),
        ("Forwarded", "for=192.0.2.9;host=a.org"),
        ("Forwarded", "for=10.9.9.9;host=b"),
    ]
    assert base_url(request(headers, links=TRUSTED_RFC7239)) == "http://a.org/dicomweb"


def test_public_url_wins() -> None:
    links = LinkSettings(TRUSTED.trusted_proxies, "https://example.org/imaging")
    headers = {**HOST, "X-Forwarded-Host": "a.org", "X-Forwarded-Prefix": "/x"}
    assert base_url(request(headers, links=links)) == "https://example.org/imaging/dicomweb"
    assert base_url(request(HOST, links=links, peer="192.0.2.1")) == (
        "https://example.org/imaging/dicomweb"
    )


def test_nothing_trusted_by_default() -> None:
    headers = {**HOST, "X-Forwarded-Host": "a.org"}
    assert base_url(request(headers, peer="127.0.0.1", links=LinkSettings())) == (
        "http://pacs.local:8080/dicomweb"
    )


def test_client_address() -> None:
    headers = {"X-Forwarded-For": "192.0.2.9, 10.2.2.2"}
    assert client_address(request(headers)) == "192.0.2.9"
    assert client_address(request(headers, peer="192.0.2.1")) == "192.0.2.1"


# A proxy passes on as they came the headers of the family it does not set: a client's.
SPOOFED = {"Forwarded": "for=198.51.100.1;host=evil.example;proto=https"}
BY_NGINX = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Host": "pacs.example.org"}
BY_RFC7239_PROXY = {"Forwarded": "for=203.0.113.9;host=pacs.example.org"}
CLIENT_X = {"X-Forwarded-For": "198.51.100.1", "X-Forwarded-Host": "evil.example"}
CLIENT_PREFIX = {"X-Forwarded-Prefix": "/evil"}


@pytest.mark.parametrize(
    ("headers", "links"),
    [
        ({**SPOOFED, **BY_NGINX}, TRUSTED),  # the review's repro: X-Forwarded-* proxy
        ({**CLIENT_X, **BY_RFC7239_PROXY}, TRUSTED_RFC7239),
        ({**CLIENT_PREFIX, **BY_RFC7239_PROXY}, TRUSTED_RFC7239),  # RFC 7239 has no prefix
    ],
)
def test_a_client_header_of_the_other_family_is_not_believed(
    headers: dict[str, str], links: LinkSettings
) -> None:
    """Regression: a client's own `Forwarded` header beat the trusted proxy's X-Forwarded-*
    ones, putting its host into the links and its address into the audit trail."""
    spoofed = request({**HOST, **headers}, links=links)
    assert base_url(spoofed) == "http://pacs.example.org/dicomweb"
    assert client_address(spoofed) == "203.0.113.9"


def test_x_forwarded_is_the_default_family() -> None:
    """nginx, HAProxy and most load balancers set X-Forwarded-*; a bare `Forwarded` header
    from a trusted peer is not read unless PACS_TRUSTED_PROXY_HEADERS=forwarded."""
    assert LinkSettings().proxy_headers is ProxyHeaders.X_FORWARDED
    assert base_url(request({**HOST, **BY_RFC7239_PROXY})) == DIRECT


def test_x_forwarded_headers_the_proxy_does_not_set_are_the_clients() -> None:
    """HAProxy's `option forwardfor` (and the usual nginx configuration) set For and Proto
    and pass a client's X-Forwarded-Host and -Prefix through: by default only For and Proto
    are read (the second review's repro)."""
    default = LinkSettings(TRUSTED.trusted_proxies)
    headers = {
        **HOST,
        "X-Forwarded-For": "192.0.2.9",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Prefix": "/phish",
    }
    origin = request_origin(HTTPConnection(request(headers, links=default).scope), default)
    assert str(origin) == f"https://{HOST['Host']}"
    assert origin.client == "192.0.2.9"


def test_the_origin_is_computed_once_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: the sign-in middleware (on the bare scope), then every link and the
    audit trail's client address each read the forwarded headers again."""
    parsed: list[Headers] = []
    hops = proxies.forwarded_hops

    def counting(headers: Headers, *args: Any) -> list[proxies.Hop]:
        parsed.append(headers)
        return hops(headers, *args)

    monkeypatch.setattr(proxies, "forwarded_hops", counting)
    first = request({**HOST, "X-Forwarded-For": "192.0.2.9", "X-Forwarded-Host": "a.org"})
    assert request_origin(HTTPConnection(first.scope), TRUSTED).client == "192.0.2.9"
    assert base_url(first) == base_url(first) == "http://a.org/dicomweb"
    assert client_address(first) == "192.0.2.9"
    assert len(parsed) == 1
    # Each request has its own.
    second = request({**HOST, "X-Forwarded-For": "192.0.2.7"})
    assert (client_address(second), base_url(second)) == ("192.0.2.7", DIRECT)
    assert len(parsed) == 2


def test_the_origin_of_a_plain_request_builds_no_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: every request's origin (the access log's client address) was read from
    `request.url`, which builds and parses the whole URL, and the peer's address was parsed
    even with no trusted proxy: half of /health's time in Python. The scope has it all."""

    def no_url(self: HTTPConnection) -> None:
        raise AssertionError("request.url built")

    def no_parse(address: str | None) -> None:
        raise AssertionError("peer address parsed")

    monkeypatch.setattr(HTTPConnection, "url", property(no_url))
    monkeypatch.setattr(proxies, "_ip", no_parse)
    plain = request(HOST, peer=OTHER, scheme="https", links=LinkSettings())
    origin = request_origin(HTTPConnection(plain.scope), LinkSettings())
    assert (str(origin), origin.client) == ("https://pacs.local:8080", OTHER)
