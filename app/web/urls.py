"""Absolute URLs for responses, honouring reverse proxies (Forwarded, X-Forwarded-*)."""

from __future__ import annotations

from starlette.requests import Request

DICOMWEB_PREFIX = "/dicomweb"
# Every DICOMweb route also exists under DICOMWEB_PREFIX + TENANTS_PATH + "/{tenant}".
TENANTS_PATH = "/tenants"


def _forwarded(header: str) -> dict[str, str]:
    """The first element of an RFC 7239 Forwarded header (the client-facing proxy)."""
    first = header.split(",", 1)[0]
    out: dict[str, str] = {}
    for pair in first.split(";"):
        name, _, value = pair.partition("=")
        if value:
            out[name.strip().lower()] = value.strip().strip('"')
    return out


def base_url(request: Request) -> str:
    """The DICOMweb root as the client sees it, e.g. https://pacs.example.org/dicomweb."""
    headers = request.headers
    scheme = request.url.scheme
    host = headers.get("host") or request.url.netloc
    if forwarded := headers.get("forwarded"):
        fields = _forwarded(forwarded)
        scheme = fields.get("proto", scheme)
        host = fields.get("host", host)
    else:
        if proto := headers.get("x-forwarded-proto"):
            scheme = proto.split(",", 1)[0].strip()
        if fwd_host := headers.get("x-forwarded-host"):
            host = fwd_host.split(",", 1)[0].strip()
    prefix = headers.get("x-forwarded-prefix", "").split(",", 1)[0].strip().rstrip("/")
    # Under /dicomweb/tenants/{tenant}, links stay in the tenant the request named.
    tenant = request.path_params.get("tenant")
    tenant_path = f"{TENANTS_PATH}/{tenant}" if tenant else ""
    # Inside the DICOMweb mount, root_path already ends with the prefix.
    root = str(request.scope.get("root_path", "")).rstrip("/").removesuffix(tenant_path)
    if not root.endswith(DICOMWEB_PREFIX):
        root += DICOMWEB_PREFIX
    return f"{scheme}://{host}{prefix}{root}{tenant_path}"


def study_url(base: str, study: str) -> str:
    return f"{base}/studies/{study}"


def series_url(base: str, study: str, series: str) -> str:
    return f"{base}/studies/{study}/series/{series}"


def instance_url(base: str, study: str, series: str, sop: str) -> str:
    return f"{base}/studies/{study}/series/{series}/instances/{sop}"
