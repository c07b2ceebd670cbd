"""Accept header parsing (PS3.18 8.7): the header's media ranges, by preference. Which
representation they get is decided by the services' plan (app/services/plan.py)."""

from __future__ import annotations

from app.dicom.multipart import parse_media_type
from app.services.plan import MediaRange


def _split_unquoted(header: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in header:
        if char == '"':
            quoted = not quoted
        if char == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def accept_ranges(header: str | None) -> list[MediaRange]:
    """Every media range of an Accept header by preference (q, then order), q=0 ones (types
    the client refuses, RFC 9110 12.5.1) last. No header means */*."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges: list[tuple[float, int, MediaRange]] = []
    for i, item in enumerate(_split_unquoted(header, ",")):
        media_type, params = parse_media_type(item)
        if not media_type:
            continue
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 1.0
        ranges.append((-q, i, MediaRange(media_type, params, max(q, 0.0))))
    return [r for _, _, r in sorted(ranges, key=lambda t: (t[0], t[1]))]


def parse_accept(header: str | None) -> list[MediaRange]:
    """Media ranges by preference (q, then order); q=0 dropped. No header means */*."""
    return [r for r in accept_ranges(header) if r.q > 0]
