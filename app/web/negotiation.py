"""Accept header parsing and the choice of representation for WADO-RS (PS3.18 8.7)."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.dicom.multipart import parse_media_type
from app.dicom.transfer_syntax import (
    DEFAULT_SYNTAX,
    EXPLICIT_VR_LITTLE_ENDIAN,
    NATIVE,
    NATIVE_LITTLE_ENDIAN,
    frame_media_type,
    syntaxes_of,
)
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


@dataclass(frozen=True)
class Representation:
    multipart: bool
    media_type: str
    transfer_syntax: str


def needs_transcoding(rep: Representation, stored: str) -> bool:
    """Whether serving `rep` of data stored in `stored` means converting it. Native frames
    are always served little endian, so any native little-endian target matches them."""
    if rep.transfer_syntax == stored:
        return False
    if rep.media_type == "application/octet-stream":
        return stored not in NATIVE
    return True


def _requested(syntax: str | None) -> str | None:
    """The syntax a transfer-syntax parameter names; None for '*' or no parameter."""
    return None if syntax in (None, ANY_SYNTAX) else syntax


def instance_candidates(accept: list[MediaRange], stored: str) -> list[Representation]:
    """The representations of a whole instance the client accepts, best first.

    Without a transfer-syntax parameter the instance is sent as stored: converting every
    retrieval to Explicit VR Little Endian would decompress (and inflate) whole studies that
    viewers and archives read as they are; ask for a syntax to get a conversion.
    """
    found: list[Representation] = []
    for r in accept:
        if r.media_type in ("*/*", "multipart/*"):
            found.append(Representation(True, "application/dicom", stored))
        elif r.media_type == "multipart/related" and r.type_param in (
            "",
            "*/*",
            "application/dicom",
        ):
            syntax = _requested(r.transfer_syntax) or stored
            found.append(Representation(True, "application/dicom", syntax))
        elif r.media_type == "application/dicom":
            syntax = _requested(r.transfer_syntax) or stored
            found.append(Representation(False, "application/dicom", syntax))
    if not found:
        raise NotAcceptable(
            "none of the accepted media types can be served: instances are sent as "
            'multipart/related; type="application/dicom" (or application/dicom for one '
            "instance), in the stored transfer syntax or the one asked for with "
            "transfer-syntax=<UID>; application/zip downloads a study or series"
        )
    return found


def _frame_syntax(media_type: str, requested: str | None, stored: str) -> str | None:
    """The syntax to send frames of `media_type` in (None: that media type cannot carry the
    requested syntax)."""
    stored_type = frame_media_type(stored)
    if media_type == "application/octet-stream":
        if requested is None or requested in NATIVE_LITTLE_ENDIAN:
            return stored if stored in NATIVE else EXPLICIT_VR_LITTLE_ENDIAN
        return None
    allowed = syntaxes_of(media_type)
    if requested is None:
        # The stored encoding when it is already of this media type (a JPEG baseline frame
        # asked for as image/jpeg), else the media type's RESTful default.
        return (
            stored
            if stored_type in (media_type, _rle_alias(media_type))
            else (DEFAULT_SYNTAX.get(media_type))
        )
    return requested if requested in allowed else None


def _rle_alias(media_type: str) -> str:
    return "image/x-dicom-rle" if media_type == "image/dicom-rle" else media_type


def frame_candidates(accept: list[MediaRange], stored: str) -> list[Representation]:
    """The representations of frames the client accepts, best first."""
    stored_type = frame_media_type(stored)
    found: list[Representation] = []
    for r in accept:
        multipart = r.media_type == "multipart/related"
        wanted = r.type_param if multipart else r.media_type
        if r.media_type in ("*/*", "multipart/*") or (multipart and wanted == "*/*"):
            found.append(Representation(True, stored_type, stored))
            continue
        if multipart and wanted == "":
            wanted = "application/octet-stream"
        if r.transfer_syntax == ANY_SYNTAX and wanted in ("application/octet-stream", "image/*"):
            # OHIF asks for octet-stream with transfer-syntax=*: it takes frames as stored.
            found.append(Representation(multipart, stored_type, stored))
            continue
        syntax = _frame_syntax(_rle_alias(wanted), _requested(r.transfer_syntax), stored)
        if syntax is not None:
            media_type = "application/octet-stream"
            if syntax not in NATIVE:
                # RLE frames are labelled with the name the client used for them.
                media_type = frame_media_type(syntax)
                if media_type == _rle_alias(wanted):
                    media_type = wanted
            found.append(Representation(multipart, media_type, syntax))
    if not found:
        raise NotAcceptable(
            "none of the accepted media types can be served: frames are available as "
            "application/octet-stream (uncompressed), image/jpeg, image/jls, image/jp2 or "
            f"image/dicom-rle, and as stored ({stored_type}, transfer syntax {stored}) with "
            "transfer-syntax=*"
        )
    return found
