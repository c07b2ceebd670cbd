"""HTTP Range requests (RFC 9110 Section 14): which single range is served, or none, or 416."""

from __future__ import annotations

import pytest

from app.web.ranges import ByteRange, RangeNotSatisfiable, parse_range

ETAG = '"v1-abc"'


@pytest.mark.parametrize(
    ("header", "total", "expected"),
    [
        ("bytes=0-99", 1234, (0, 100)),
        ("bytes=100-199", 1234, (100, 100)),
        ("bytes=5-5", 10, (5, 1)),
        ("bytes=0-0", 1, (0, 1)),
        # last-pos beyond the end is clamped to the last byte (14.1.2)
        ("bytes=1000-99999", 1234, (1000, 234)),
        ("bytes=1233-1233", 1234, (1233, 1)),
        ("bytes=500-", 1234, (500, 734)),
        ("bytes=0-", 1234, (0, 1234)),
        ("bytes=-10", 1234, (1224, 10)),
        # a suffix longer than the representation selects all of it
        ("bytes=-5000", 1234, (0, 1234)),
        ("bytes=-1234", 1234, (0, 1234)),
        # range unit case-insensitive, optional whitespace, empty list elements ignored
        ("BYTES=2-3", 10, (2, 2)),
        ("Bytes=2-3", 10, (2, 2)),
        ("bytes= 2-3 ", 10, (2, 2)),
        ("bytes=,2-3,", 10, (2, 2)),
        ("  bytes=2-3", 10, (2, 2)),
        # leading zeros are digits like any other
        ("bytes=0002-0003", 10, (2, 2)),
        # a number too long to matter is still read as "beyond the end"
        ("bytes=1-" + "9" * 5000, 10, (1, 9)),
        ("bytes=-" + "9" * 5000, 10, (0, 10)),
    ],
)
def test_single_range(header: str, total: int, expected: tuple[int, int]) -> None:
    start, length = expected
    assert parse_range(header, total) == ByteRange(start, length, total)


@pytest.mark.parametrize(
    "header",
    [
        None,
        # a unit other than bytes is ignored (14.2)
        "items=0-5",
        "none",
        "bytes",
        "bytes=",
        "bytes=,",
        # invalid syntax: the field is ignored, never a 400
        "bytes=a-b",
        "bytes=-",
        "bytes=1",
        "bytes=1-2-3",
        "bytes=+1-2",
        "bytes=1 -2",
        "bytes = 1-2",
        "bytes=0x10-0x20",
        "bytes=--5",
        # last-pos < first-pos makes the int-range invalid (14.1.1), so the whole field is
        # ignored: 200 with everything rather than 416
        "bytes=10-5",
        # several ranges: answered with the whole representation, which 14.2 allows
        "bytes=0-1,5-6",
        "bytes=0-0,-1",
        "bytes=0-1, 2-3",
        # several ranges even when none of them is satisfiable
        "bytes=5000-6000,7000-8000",
    ],
)
def test_range_ignored(header: str | None) -> None:
    assert parse_range(header, 1234) is None


def test_range_without_etag_and_without_if_range_is_served() -> None:
    assert parse_range("bytes=0-9", 100, etag=ETAG) == ByteRange(0, 10, 100)


@pytest.mark.parametrize(
    ("header", "total"),
    [
        ("bytes=1234-", 1234),
        ("bytes=1234-2000", 1234),
        ("bytes=99999-", 1234),
        ("bytes=" + "9" * 5000 + "-", 1234),
        # a zero suffix-length is never satisfiable (14.1.1)
        ("bytes=-0", 1234),
        ("bytes=-0", 0),
        # an empty representation satisfies no int-range
        ("bytes=0-", 0),
        ("bytes=0-0", 0),
    ],
)
def test_range_not_satisfiable(header: str, total: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as raised:
        parse_range(header, total)
    assert raised.value.total == total
    assert raised.value.content_range() == f"bytes */{total}"


def test_suffix_of_empty_representation_sends_it_whole() -> None:
    # Satisfiable by 14.1.1 yet selecting no byte, which "bytes a-b/0" cannot express.
    assert parse_range("bytes=-10", 0) is None


@pytest.mark.parametrize(
    ("if_range", "etag", "served"),
    [
        (ETAG, ETAG, True),
        (f" {ETAG} ", ETAG, True),
        ('"v2-def"', ETAG, False),
        # If-Range needs a strong comparison (13.1.5): a weak tag on either side never matches
        (f"W/{ETAG}", f"W/{ETAG}", False),
        (ETAG, f"W/{ETAG}", False),
        (f"W/{ETAG}", ETAG, False),
        # a date cannot be checked: no Last-Modified is known
        ("Wed, 21 Oct 2015 07:28:00 GMT", ETAG, False),
        # no current entity tag: nothing can match
        (ETAG, None, False),
        ("", ETAG, False),
    ],
)
def test_if_range(if_range: str, etag: str | None, served: bool) -> None:
    expected = ByteRange(10, 10, 100) if served else None
    assert parse_range("bytes=10-19", 100, if_range=if_range, etag=etag) == expected


def test_if_range_mismatch_wins_over_not_satisfiable() -> None:
    # A failed If-Range makes the server ignore Range entirely (13.2.2), so no 416.
    assert parse_range("bytes=500-", 100, if_range='"old"', etag=ETAG) is None
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=500-", 100, if_range=ETAG, etag=ETAG)


@pytest.mark.parametrize(
    ("byte_range", "expected"),
    [
        (ByteRange(0, 100, 1234), "bytes 0-99/1234"),
        (ByteRange(1233, 1, 1234), "bytes 1233-1233/1234"),
        (ByteRange(0, 1, 1), "bytes 0-0/1"),
    ],
)
def test_content_range(byte_range: ByteRange, expected: str) -> None:
    assert byte_range.content_range() == expected
    assert byte_range.end == byte_range.start + byte_range.length - 1
