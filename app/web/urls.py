"""Absolute URLs for responses: PACS_PUBLIC_URL, or the origin the client used (the Host
header, or a trusted proxy's Forwarded / X-Forwarded-* headers: see `proxies.py`)."""

from __future__ import annotations

from starlette.requests import Request

from app.web.proxies import public_origin

DICOMWEB_PREFIX = "/dicomweb"


def base_url(request: Request) -> str:
    """The DICOMweb root as the client sees it, e.g. https://pacs.example.org/dicomweb."""
    # Inside the DICOMweb mount, root_path already ends with the prefix.
    root = str(request.scope.get("root_path", "")).rstrip("/")
    if not root.endswith(DICOMWEB_PREFIX):
        root += DICOMWEB_PREFIX
    return f"{public_origin(request)}{root}"


def study_url(base: str, study: str) -> str:
    return f"{base}/studies/{study}"


def series_url(base: str, study: str, series: str) -> str:
    return f"{base}/studies/{study}/series/{series}"


def instance_url(base: str, study: str, series: str, sop: str) -> str:
    return f"{base}/studies/{study}/series/{series}/instances/{sop}"
