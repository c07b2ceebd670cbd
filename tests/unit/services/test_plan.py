"""The retrieval plan: which representation a request or a DIMSE peer gets (PS3.18 8.7,
Table 8.7.3-5), and whether it is sent as stored or converted. The pure choices are tables;
the `Planner` runs on real files in a folder store (no index: it is not asked)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import RLELossless

from app.auth.principal import Access, Permission, Principal
from app.dicom.multipart import parse_media_type
from app.services.errors import NotAcceptable
from app.services.imaging import ImagingService
from app.services.plan import (
    MediaRange,
    Planner,
    Representation,
    frame_candidates,
    instance_candidates,
    needs_transcoding,
    peer_targets,
    rendered_media_type,
    uri_media_type,
)
from app.services.ports import StoredInstance
from tests.unit.services.stored import stored_instance

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
DICOM = "application/dicom"
READER = Access(Principal("r", frozenset({Permission.READ}), None))


def parse_accept(header: str | None) -> list[MediaRange]:
    """Media ranges of a header written as the tables below write them (no quoted commas,
    no q=0): what app/web/negotiation.py makes of an Accept header."""
    if header is None:
        return [MediaRange("*/*")]
    ranges = []
    for item in header.split(","):
        media_type, params = parse_media_type(item)
        ranges.append(MediaRange(media_type, params, float(params.pop("q", "1"))))
    return sorted(ranges, key=lambda r: -r.q)


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


def test_content_type_labels_native_frames_little_endian() -> None:
    assert Representation(True, OCTET, BIG).content_type == f"{OCTET}; transfer-syntax={EVRLE}"
    assert Representation(False, DICOM, BIG).content_type == f"{DICOM}; transfer-syntax={BIG}"


@pytest.mark.parametrize(
    ("stored", "accepted", "expected"),
    [
        # The stored syntax first when accepted: the file is sent as it is.
        (J2K, [EVRLE, J2K], [J2K, EVRLE]),
        # Else native syntaxes, explicit before implicit, then the peer's own order.
        (J2K, [JLS, IVRLE, EVRLE], [EVRLE, IVRLE, JLS]),
        (EVRLE, [RLE, J2K], [RLE, J2K]),
        (EVRLE, [], []),
    ],
)
def test_peer_targets(stored: str, accepted: list[str], expected: list[str]) -> None:
    assert peer_targets(stored, accepted) == expected


def _ranges(*items: tuple[str, float]) -> list[MediaRange]:
    return [MediaRange(media_type, {}, q) for media_type, q in items]


@pytest.mark.parametrize(
    ("ranges", "allow_gif", "expected"),
    [
        ([], False, "image/jpeg"),  # a header of empty items
        (_ranges(("*/*", 1)), True, "image/jpeg"),
        (_ranges(("image/png", 1), ("image/jpeg", 0.5)), False, "image/png"),
        (_ranges(("image/*", 1), ("image/jpeg", 0)), False, "image/png"),
        (_ranges(("image/gif", 1)), True, "image/gif"),
        (_ranges(("image/gif", 1)), False, None),  # thumbnails are not animated
        (_ranges(("text/html", 1)), True, None),
    ],
)
def test_rendered_media_type(
    ranges: list[MediaRange], allow_gif: bool, expected: str | None
) -> None:
    assert rendered_media_type(ranges, allow_gif=allow_gif) == expected


@pytest.mark.parametrize(
    ("ranges", "expected"),
    [
        (_ranges(("application/dicom", 1)), DICOM),
        (_ranges(("text/html", 1), ("image/png", 1)), "image/png"),
        (_ranges(("image/*", 1)), "image/jpeg"),
        (_ranges(("text/html", 1)), None),
    ],
)
def test_uri_media_type(ranges: list[MediaRange], expected: str | None) -> None:
    assert uri_media_type(ranges) == expected


async def _stored(tmp_path: Path, *, pixels: bool = True) -> tuple[Planner, StoredInstance]:
    retrieve, instance = await stored_instance(tmp_path, pixels=pixels)
    return Planner(retrieve, ImagingService(retrieve)), instance


@pytest.mark.parametrize(
    ("accepted", "syntax", "as_stored"),
    [
        ([J2K, EVRLE], EVRLE, True),  # the usual case: the stored file
        ([IVRLE, RLE], IVRLE, False),  # native before compressed
        ([RLE], RLE, False),  # the stored syntax not accepted: converted
    ],
)
async def test_plan_for_a_peer(
    tmp_path: Path, accepted: list[str], syntax: str, as_stored: bool
) -> None:
    planner, instance = await _stored(tmp_path)
    plan = await planner.for_peer(READER, instance, accepted)
    assert (plan.rep.transfer_syntax, plan.as_stored) == (syntax, as_stored)
    if not as_stored:
        assert plan.source is not None and plan.transcoder is not None
        body, size = await planner.imaging.transcoded(plan.source, plan.transcoder)
        data = b"".join([chunk async for chunk in body])
        assert len(data) == size
        converted = dcmread(io.BytesIO(data))
        assert converted.file_meta.TransferSyntaxUID == syntax
        original = dcmread(planner.retrieve.blobs.local_path(instance.blob_key))
        assert (converted.pixel_array == original.pixel_array).all()


async def test_a_peer_that_accepts_nothing_producible_is_refused(tmp_path: Path) -> None:
    planner, instance = await _stored(tmp_path)
    with pytest.raises(NotAcceptable):
        await planner.for_peer(READER, instance, [])
    with pytest.raises(NotAcceptable, match=BASELINE):
        # 16-bit data cannot be JPEG baseline (8-bit): the refusal says which syntax.
        await planner.for_peer(READER, instance, [BASELINE])


@pytest.mark.parametrize(
    ("accept", "syntax", "as_stored"),
    [
        (None, EVRLE, True),
        (f"{DICOM}; transfer-syntax={EVRLE}", EVRLE, True),
        (f"{DICOM}; transfer-syntax={RLELossless}", RLELossless, False),
        # The first accepted representation that can be made: baseline cannot (16 bits).
        (
            f"{DICOM}; transfer-syntax={BASELINE}, {DICOM}; transfer-syntax={IVRLE};q=0.5",
            IVRLE,
            False,
        ),
    ],
)
async def test_plan_for_an_accept_header(
    tmp_path: Path, accept: str | None, syntax: str, as_stored: bool
) -> None:
    planner, instance = await _stored(tmp_path)
    candidates = instance_candidates(parse_accept(accept), instance.transfer_syntax_uid)
    plan = await planner.instance(READER, instance, candidates)
    assert (plan.rep.transfer_syntax, plan.as_stored) == (syntax, as_stored)


async def test_an_instance_without_pixels_is_not_compressed(tmp_path: Path) -> None:
    """A compressed syntax asked for an instance without pixel data: sent as stored (native
    little endian already); a DIMSE peer's context still gets the syntax it accepted."""
    planner, instance = await _stored(tmp_path, pixels=False)
    candidates = instance_candidates(parse_accept(f"{DICOM}; transfer-syntax={RLE}"), EVRLE)
    plan = await planner.instance(READER, instance, candidates)
    assert (plan.rep.transfer_syntax, plan.as_stored) == (EVRLE, True)
    peer = await planner.for_peer(READER, instance, [RLE])
    assert (peer.rep.transfer_syntax, peer.as_stored) == (RLE, False)


@pytest.mark.parametrize(
    ("accept", "syntax", "from_ranges"),
    [
        (f"multipart/related; type={OCTET}", EVRLE, True),
        (f"multipart/related; type={OCTET}; transfer-syntax=*", EVRLE, True),
        ("multipart/related; type=image/dicom-rle", RLE, False),
        # Not producible (16-bit baseline), then octet-stream: the stored ranges.
        (f"image/jpeg; transfer-syntax={BASELINE}, {OCTET};q=0.5", EVRLE, True),
    ],
)
async def test_plan_for_frames(tmp_path: Path, accept: str, syntax: str, from_ranges: bool) -> None:
    planner, instance = await _stored(tmp_path)
    candidates = frame_candidates(parse_accept(accept), instance.transfer_syntax_uid)
    plan = await planner.frames(READER, instance, [2], candidates)
    assert plan.rep.transfer_syntax == syntax
    assert (plan.ranges is not None) is from_ranges
    if from_ranges:
        assert plan.ranges == [instance.frames[1]]
    else:
        assert plan.transcoder is not None and plan.transcoder.target_syntax == syntax
