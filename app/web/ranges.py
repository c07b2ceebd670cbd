"""HTTP Range requests (RFC 9110 Section 14) for a representation whose length is known.

Only a single byte range is served as 206. Everything the RFC lets a server ignore is
ignored, so the whole representation is sent with 200: a missing Range field, a range unit
other than bytes, a field that does not follow the grammar (including `a-b` with b < a, which
14.1.1 makes invalid), several ranges (we do not build multipart/byteranges), and an If-Range
whose validator does not match (13.1.5). A valid single range that starts beyond the end is
not satisfiable: 416 with `Content-Range: bytes */length`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# int-range = first-pos "-" [ last-pos ]  /  suffix-range = "-" suffix-length (14.1.1)
_RANGE_SPEC = re.compile(r"([0-9]+)-([0-9]*)|-([0-9]+)")
_OWS = " \t"
_HUGE = 10**18  # more bytes than any representation has


@dataclass(frozen=True)
class ByteRange:
    """`length` bytes from `start` of a representation of `total` bytes (length >= 1)."""

    start: int
    length: int
    total: int

    @property
    def end(self) -> int:
        """The last byte position, inclusive (last-pos)."""
        return self.start + self.length - 1

    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end}/{self.total}"


class RangeNotSatisfiable(Exception):
    """The range starts beyond the end of the representation (answer 416)."""

    def __init__(self, total: int) -> None:
        super().__init__(f"the requested range starts beyond the end of the {total} bytes")
        self.total = total

    def content_range(self) -> str:
        return f"bytes */{self.total}"


def parse_range(
    header: str | None, total: int, if_range: str | None = None, etag: str | None = None
) -> ByteRange | None:
    """The single byte range to send, or None to send the whole representation.

    `if_range` is the If-Range field and `etag` the representation's current entity tag; an
    If-Range holding a date or a weak tag never matches (13.1.5 wants a strong comparison and
    we know no Last-Modified). Raises RangeNotSatisfiable for a range beyond the end."""
    if header is None:
        return None
    spec = _single_range_spec(header)
    if spec is None or (if_range is not None and not _strong_match(if_range, etag)):
        return None
    if isinstance(spec, int):
        # A suffix longer than the representation selects all of it. For an empty
        # representation a non-zero suffix is satisfiable yet selects nothing: send it whole.
        if spec == 0:
            raise RangeNotSatisfiable(total)
        length = min(spec, total)
        return ByteRange(total - length, length, total) if length else None
    first, last = spec
    if first >= total:
        raise RangeNotSatisfiable(total)
    end = total - 1 if last is None else min(last, total - 1)
    return ByteRange(first, end - first + 1, total)


def _single_range_spec(header: str) -> tuple[int, int | None] | int | None:
    """(first-pos, last-pos or None) of a valid bytes range with one int-range, or the
    suffix-length of one suffix-range."""
    unit, equals, range_set = header.strip(_OWS).partition("=")
    if not equals or unit.lower() != "bytes":  # range units are case-insensitive (14.1)
        return None
    # 1#range-spec: a recipient ignores empty list elements (RFC 9110 5.6.1.2).
    specs = [item.strip(_OWS) for item in range_set.split(",")]
    specs = [item for item in specs if item]
    if len(specs) != 1:
        return None
    match = _RANGE_SPEC.fullmatch(specs[0])
    if match is None:
        return None
    first, last, suffix = match.groups()
    if suffix is not None:
        return _number(suffix)
    if last and _number(last) < _number(first):
        return None  # invalid int-range: the field is ignored, not answered with 416
    return _number(first), _number(last) if last else None


def _number(digits: str) -> int:
    """The value of 1*DIGIT; beyond any real length, capped so int() stays cheap."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else _HUGE


def _strong_match(if_range: str, etag: str | None) -> bool:
    value = if_range.strip(_OWS)
    return (
        etag is not None
        and not etag.startswith("W/")
        and value.startswith('"')
        and value == etag.strip(_OWS)
    )
