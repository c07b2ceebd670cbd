"""How the client reached us: the scheme, host and path prefix it used and its address, from
the request itself or, only when the immediate peer is a trusted reverse proxy, from the
proxy's headers. Anyone else could otherwise put their own host name into the links the
archive hands out.

Only the header family the proxies set is read (PACS_TRUSTED_PROXY_HEADERS): a proxy passes
the other family through as the client wrote it, so reading both would let a client's own
`Forwarded` header beat nginx's `X-Forwarded-*` ones.

Each proxy appends its hop to the right of these headers; starting from the right, a hop is
believed while the hop on its right was added by a trusted proxy (its `for` address is one),
so a value a client sent ahead of the first trusted proxy is never used.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# A host with an optional port: a name, an IPv4 address or a bracketed IPv6 address. Anything
# else (a slash, a space, an "@") would change the meaning of the links built from it.
_HOST = re.compile(r"(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_PREFIX = re.compile(r"(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*/?")


class ProxyHeaders(StrEnum):
    """The header family trusted proxies set (PACS_TRUSTED_PROXY_HEADERS)."""

    # X-Forwarded-For/-Proto/-Host/-Prefix: nginx, HAProxy, Traefik, AWS and most others.
    X_FORWARDED = "x-forwarded"
    # RFC 7239 `Forwarded`, which has no prefix (PACS_PUBLIC_URL sets one).
    FORWARDED = "forwarded"


@dataclass(frozen=True)
class LinkSettings:
    """What the app needs to build absolute links (from PACS_TRUSTED_PROXIES,
    PACS_TRUSTED_PROXY_HEADERS and PACS_PUBLIC_URL)."""

    trusted_proxies: tuple[IPNetwork, ...] = ()
    # scheme://host[:port][/prefix] without a trailing slash; empty: from each request.
    public_url: str = ""
    proxy_headers: ProxyHeaders = ProxyHeaders.X_FORWARDED
    # Of the X-Forwarded-* family, the headers the proxies set (for, proto, host, prefix):
    # the others reach us as the client wrote them and are not read.
    x_forwarded: frozenset[str] = frozenset({"for", "proto"})

    def trusts(self, address: str | None) -> bool:
        if not self.trusted_proxies:  # the usual case: no address to parse on each request
            return False
        ip = _ip(address)
        return ip is not None and any(ip in net for net in self.trusted_proxies)


@dataclass(frozen=True)
class Hop:
    """One proxy's view of the request it forwarded (empty: not said)."""

    client: str = ""
    proto: str = ""
    host: str = ""
    prefix: str = ""


@dataclass(frozen=True)
class Origin:
    """How the client reached us: links start with `scheme://host` + `prefix`."""

    scheme: str
    host: str
    prefix: str = ""
    client: str = ""  # the client's address

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}{self.prefix}"


def link_settings(request: HTTPConnection) -> LinkSettings:
    """The app's LinkSettings (`create_app(links=...)`); none trusted, no public URL in an
    app built without them."""
    found = getattr(request.app.state, "links", None)
    return found if isinstance(found, LinkSettings) else LinkSettings()


def public_origin(request: HTTPConnection) -> str:
    """What every absolute link starts with: PACS_PUBLIC_URL when set, else the origin the
    client used (see `request_origin`)."""
    links = link_settings(request)
    return links.public_url or str(request_origin(request, links))


def client_address(request: HTTPConnection) -> str:
    """The client's address: the immediate peer, or the client a trusted proxy names."""
    return request_origin(request, link_settings(request)).client


# Where a request's Origin is kept once computed (the scope's state, shared by the sign-in
# middleware and the routes of one request).
ORIGIN_KEY = "pacs.origin"


def request_origin(request: HTTPConnection, links: LinkSettings) -> Origin:
    """The request's Origin, computed at its first use (sign-in, for the client address)
    and kept in the scope's state for the links and the audit trail."""
    state = request.scope.setdefault("state", {})
    found = state.get(ORIGIN_KEY)
    if isinstance(found, Origin):
        return found
    state[ORIGIN_KEY] = origin = _origin(request, links)
    return origin


def _origin(request: HTTPConnection, links: LinkSettings) -> Origin:
    # Read from the scope, not `request.url`, which builds and parses the whole URL: every
    # request needs its origin (at least for the access log), most never need the URL.
    scope = request.scope
    client = scope.get("client")
    peer = client[0] if client else ""
    scheme = scope.get("scheme", "http")
    host = _host_header(scope.get("headers", ()))
    if not _HOST.fullmatch(host):
        host = request.url.netloc if _HOST.fullmatch(request.url.netloc) else "localhost"
    direct = Origin(scheme, host, "", peer)
    if not links.trusts(peer):
        return direct
    hops = forwarded_hops(request.headers, links.proxy_headers, links.x_forwarded)
    if not hops:
        return direct
    index = len(hops) - 1
    while index > 0 and links.trusts(hops[index].client):
        index -= 1
    hop = hops[index]
    return Origin(
        hop.proto.lower() if hop.proto.lower() in ("http", "https") else scheme,
        hop.host if _HOST.fullmatch(hop.host) else host,
        hop.prefix.rstrip("/") if _PREFIX.fullmatch(hop.prefix) else "",
        hop.client or peer,
    )


def _host_header(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The first Host header of the raw ASGI headers (lower-case names), as Starlette's
    `Headers.get` reads it, without building a Headers object."""
    for name, value in headers:
        if name == b"host":
            return value.decode("latin-1")
    return ""


def forwarded_hops(
    headers: Headers,
    family: ProxyHeaders,
    x_forwarded: frozenset[str] = frozenset({"for", "proto", "host", "prefix"}),
) -> list[Hop]:
    """The hops, left (client side) to right (our side), from the headers of `family` only:
    the elements of `Forwarded`, or those of the X-Forwarded-For/-Proto/-Host/-Prefix lists
    named in `x_forwarded`, aligned on their right."""
    if family is ProxyHeaders.FORWARDED:
        hops = [_hop(element) for element in _list(headers, "forwarded")]
        lists = [[h.client for h in hops], [h.proto for h in hops], [h.host for h in hops]]
        prefixes: list[str] = []
    else:
        lists = [
            _list(headers, f"x-forwarded-{name}") if name in x_forwarded else []
            for name in ("for", "proto", "host")
        ]
        prefixes = _list(headers, "x-forwarded-prefix") if "prefix" in x_forwarded else []
    count = max(len(values) for values in [*lists, prefixes])
    # A proxy that sets a header rather than appending to it leaves fewer values than hops:
    # the outer hops then share the leftmost one.
    return [
        Hop(*(_nth_from_right(values, count - i) for values in [*lists, prefixes]))
        for i in range(count)
    ]


def _list(headers: Headers, name: str) -> list[str]:
    return _split(",".join(headers.getlist(name)), ",")


def _nth_from_right(values: Sequence[str], n: int) -> str:
    if not values:
        return ""
    return values[-n] if n <= len(values) else values[0]


def _hop(element: str) -> Hop:
    pairs: dict[str, str] = {}
    for pair in _split(element, ";"):
        name, _, value = pair.partition("=")
        value = value.strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        pairs.setdefault(name.strip().lower(), value)
    return Hop(_node_address(pairs.get("for", "")), pairs.get("proto", ""), pairs.get("host", ""))


def _node_address(node: str) -> str:
    """The address of an RFC 7239 node ("192.0.2.1:4711", "[2001:db8::1]:80"), or the node
    as it is ("unknown", "_hidden") which no trusted network contains."""
    if node.startswith("["):
        return node[1:].partition("]")[0]
    if node.count(":") == 1:
        return node.partition(":")[0]
    return node


def _split(text: str, separator: str) -> list[str]:
    """`text` split on `separator` outside double quotes, empty items dropped."""
    items: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            items.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    items.append("".join(current).strip())
    return [item for item in items if item]


def _ip(address: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address((address or "").strip())
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
