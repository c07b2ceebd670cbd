"""Accept header parsing and the choice of representation for WADO-RS (PS3.18 8.7)."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.dicom.multipart import parse_media_type
from app.dicom.transfer_syntax import NATIVE_LITTLE_ENDIAN, frame_media_type
from app.services.errors import NotAcceptable

ANY_SYNTAX = "*"


@dataclass(frozen=True)
class MediaRange:
    media_type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def type_param(self) -> str:
        return self.params.get("type", "").lower()

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")


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


def parse_accept(header: str | None) -> list[MediaRange]:
    """Media ranges by preference (q, then order); q=0 dropped. No header means */*."""
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
        if q > 0:
            ranges.append((-q, i, MediaRange(media_type, params, q)))
    return [r for _, _, r in sorted(ranges, key=lambda t: (t[0], t[1]))]


@dataclass(frozen=True)
class Representation:
    multipart: bool
    media_type: str
    transfer_syntax: str


def _syntax_ok(requested: str | None, stored: str) -> bool:
    # No transfer-syntax parameter: we answer with the stored syntax (see README).
    return requested in (None, ANY_SYNTAX, stored)


def choose_instance(accept: list[MediaRange], stored: str) -> Representation:
    """How to send whole instances stored in transfer syntax `stored`."""
    for r in accept:
        if r.media_type in ("*/*", "multipart/*"):
            return Representation(True, "application/dicom", stored)
        if (
            r.media_type == "multipart/related"
            and r.type_param in ("", "*/*", "application/dicom")
            and _syntax_ok(r.transfer_syntax, stored)
        ):
            return Representation(True, "application/dicom", stored)
        if r.media_type == "application/dicom" and _syntax_ok(r.transfer_syntax, stored):
            return Representation(False, "application/dicom", stored)
    raise NotAcceptable(
        "none of the accepted media types can be served: instances are sent as stored "
        f'(multipart/related; type="application/dicom"; transfer-syntax={stored}); '
        "transcoding to another transfer syntax is not supported yet"
    )


def choose_frames(accept: list[MediaRange], stored: str, encapsulated: bool) -> Representation:
    """How to send frames of pixel data stored in transfer syntax `stored`."""
    stored_type = frame_media_type(stored) if encapsulated else "application/octet-stream"
    for r in accept:
        if r.media_type in ("*/*", "multipart/*"):
            return Representation(True, stored_type, stored)
        multipart = r.media_type == "multipart/related"
        wanted = r.type_param if multipart else r.media_type
        if multipart and wanted == "":
            wanted = "application/octet-stream"
        syntax = r.transfer_syntax
        if multipart and wanted == "*/*" and _syntax_ok(syntax, stored):
            return Representation(True, stored_type, stored)
        if wanted == "application/octet-stream" and not encapsulated:
            # Native frames are sent little endian (big-endian data is swapped), which is
            # the frame encoding of every native little-endian syntax.
            if syntax in (None, ANY_SYNTAX) or syntax in NATIVE_LITTLE_ENDIAN:
                return Representation(multipart, stored_type, stored)
        elif wanted == "application/octet-stream" and syntax == ANY_SYNTAX:
            # OHIF asks for octet-stream with transfer-syntax=*: it takes compressed frames.
            return Representation(multipart, stored_type, stored)
        elif wanted == stored_type and _syntax_ok(syntax, stored):
            return Representation(multipart, stored_type, stored)
    raise NotAcceptable(
        "none of the accepted media types can be served: frames are sent as stored "
        f"({stored_type}, transfer syntax {stored}); decompression and transcoding are "
        "not supported yet, so ask for it with transfer-syntax=*"
    )
