"""Which representation an Accept header gets (PS3.18 8.7, Table 8.7.3-5)."""

from __future__ import annotations

import pytest

from app.services.errors import NotAcceptable
from app.web.negotiation import (
    Representation,
    frame_candidates,
    instance_candidates,
    needs_transcoding,
    parse_accept,
)

EVRLE = "1.2.840.10008.1.2.1"
IVRLE = "1.2.840.10008.1.2"
BIG = "1.2.840.10008.1.2.2"
BASELINE = "1.2.840.10008.1.2.4.50"
SV1 = "1.2.840.10008.1.2.4.70"
JLS = "1.2.840.10008.1.2.4.80"
J2K = "1.2.840.10008.1.2.4.90"
J2K_LOSSY = "1.2.840.10008.1.2.4.91"
RLE = "1.2.840.10008.1.2.5"
OCTET = "application/octet-stream"


def _frames(accept: str, stored: str) -> list[tuple[bool, str, str]]:
    return [
        (r.multipart, r.media_type, r.transfer_syntax)
        for r in frame_candidates(parse_accept(accept), stored)
    ]


@pytest.mark.parametrize(
    ("accept", "stored", "expected"),
    [
        # OHIF: compressed frames as they are.
        (f"multipart/related; type={OCTET}; transfer-syntax=*", J2K, (True, "image/jp2", J2K)),
        # No syntax on octet-stream: decompressed (the RESTful default is uncompressed).
        (f"multipart/related; type={OCTET}", J2K, (True, OCTET, EVRLE)),
        (OCTET, BASELINE, (False, OCTET, EVRLE)),
        # Native data is sent as stored (big endian is swapped on the way out).
        (f"multipart/related; type={OCTET}", BIG, (True, OCTET, BIG)),
        (f"multipart/related; type={OCTET}; transfer-syntax={EVRLE}", IVRLE, (True, OCTET, IVRLE)),
        # A media type without a syntax: the stored one if it is of that type, else the default.
        ("multipart/related; type=image/jpeg", BASELINE, (True, "image/jpeg", BASELINE)),
        ("multipart/related; type=image/jpeg", EVRLE, (True, "image/jpeg", SV1)),
        ("multipart/related; type=image/jls", EVRLE, (True, "image/jls", JLS)),
        ("multipart/related; type=image/jp2", J2K_LOSSY, (True, "image/jp2", J2K_LOSSY)),
        ("multipart/related; type=image/jp2", RLE, (True, "image/jp2", J2K)),
        ("multipart/related; type=image/dicom-rle", EVRLE, (True, "image/dicom-rle", RLE)),
        ("image/x-dicom-rle", EVRLE, (False, "image/x-dicom-rle", RLE)),
        # An explicit syntax of the media type.
        (f"image/jpeg; transfer-syntax={BASELINE}", EVRLE, (False, "image/jpeg", BASELINE)),
        ("*/*", RLE, (True, "image/x-dicom-rle", RLE)),
    ],
)
def test_frame_representation(accept: str, stored: str, expected: tuple[bool, str, str]) -> None:
    assert _frames(accept, stored)[0] == expected


def test_frame_candidates_keep_preference_order() -> None:
    accept = f"image/jp2;q=0.5, multipart/related; type={OCTET}; transfer-syntax=*"
    assert _frames(accept, BASELINE) == [(True, "image/jpeg", BASELINE), (False, "image/jp2", J2K)]


@pytest.mark.parametrize(
    "accept",
    [
        f"image/jpeg; transfer-syntax={J2K}",  # a syntax the media type cannot carry
        f"{OCTET}; transfer-syntax={J2K}",
        "image/png",
        "text/html",
    ],
)
def test_frames_not_acceptable(accept: str) -> None:
    with pytest.raises(NotAcceptable, match="frames are available as"):
        frame_candidates(parse_accept(accept), EVRLE)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, (True, J2K)),
        ('multipart/related; type="application/dicom"', (True, J2K)),
        ('multipart/related; type="application/dicom"; transfer-syntax=*', (True, J2K)),
        (f'multipart/related; type="application/dicom"; transfer-syntax={EVRLE}', (True, EVRLE)),
        (f"application/dicom; transfer-syntax={RLE}", (False, RLE)),
        ("application/dicom", (False, J2K)),
    ],
)
def test_instance_representation(accept: str | None, expected: tuple[bool, str]) -> None:
    [first, *_] = instance_candidates(parse_accept(accept), J2K)
    assert (first.multipart, first.transfer_syntax) == expected
    assert first.media_type == "application/dicom"


def test_instance_not_acceptable() -> None:
    with pytest.raises(NotAcceptable, match="application/zip"):
        instance_candidates(parse_accept("image/png"), EVRLE)


@pytest.mark.parametrize(
    ("rep", "stored", "expected"),
    [
        (Representation(True, "application/dicom", J2K), J2K, False),
        (Representation(True, "application/dicom", EVRLE), J2K, True),
        (Representation(True, "application/dicom", EVRLE), IVRLE, True),  # header re-encoded
        (Representation(True, OCTET, IVRLE), IVRLE, False),
        (Representation(True, OCTET, BIG), BIG, False),
        (Representation(True, OCTET, EVRLE), J2K, True),
        (Representation(True, "image/jpeg", SV1), BASELINE, True),
    ],
)
def test_needs_transcoding(rep: Representation, stored: str, expected: bool) -> None:
    assert needs_transcoding(rep, stored) is expected
