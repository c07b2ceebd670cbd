"""The one place that decides which representation of an instance is sent, and how.

Every retrieval asks here: WADO-RS and WADO-URI (a whole instance, from an Accept header or a
`transferSyntax` parameter), WADO-RS frames and bulk data, rendered images and thumbnails (a
media type), and C-MOVE/C-GET (the transfer syntaxes a peer accepted). The answer is a plan:
send the stored bytes as they are, or convert them with a transcoder of the imaging service,
into the first representation the receiver accepts that can be produced. The protocol layers
parse their requests into the `MediaRange`s or syntax lists taken here and carry the plan out;
they never choose a syntax themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from app.auth.principal import Access
from app.dicom.instance import FrameRanges
from app.dicom.transfer_syntax import (
    DEFAULT_SYNTAX,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    NATIVE,
    NATIVE_LITTLE_ENDIAN,
    frame_media_type,
    syntaxes_of,
)
from app.services.errors import NotAcceptable
from app.services.imaging import RENDERED_MEDIA_TYPES, ImagingService, PixelSource, Transcoder
from app.services.ports import StoredInstance
from app.services.retrieve import RetrieveService, Swap

ANY_SYNTAX = "*"
OCTET_STREAM = "application/octet-stream"
DICOM = "application/dicom"
# What a peer that accepted several syntaxes gets when the stored one is not among them:
# native syntaxes first (every receiver decodes them, and they lose nothing).
_PEER_PREFERENCE = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)


@dataclass(frozen=True)
class MediaRange:
    """One media range a client accepts (an Accept header item, a contentType value)."""

    media_type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def type_param(self) -> str:
        return self.params.get("type", "").lower()

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")


@dataclass(frozen=True)
class Representation:
    multipart: bool
    media_type: str
    transfer_syntax: str

    @property
    def content_type(self) -> str:
        """The Content-Type of one part (or body) of this representation."""
        # Native frames are sent little endian, whatever their stored byte order.
        native = self.media_type == OCTET_STREAM
        syntax = EXPLICIT_VR_LITTLE_ENDIAN if native else self.transfer_syntax
        return f"{self.media_type}; transfer-syntax={syntax}"


def needs_transcoding(rep: Representation, stored: str) -> bool:
    """Whether serving `rep` of data stored in `stored` means converting it. Native frames
    are always served little endian, so any native little-endian target matches them."""
    if rep.transfer_syntax == stored:
        return False
    if rep.media_type == OCTET_STREAM:
        return stored not in NATIVE
    return True


def _requested(syntax: str | None) -> str | None:
    """The syntax a transfer-syntax parameter names; None for '*' or no parameter."""
    return None if syntax in (None, ANY_SYNTAX) else syntax


def instance_candidates(accept: Sequence[MediaRange], stored: str) -> list[Representation]:
    """The representations of a whole instance the client accepts, best first.

    Without a transfer-syntax parameter the instance is sent as stored: converting every
    retrieval to Explicit VR Little Endian would decompress (and inflate) whole studies that
    viewers and archives read as they are; ask for a syntax to get a conversion.
    """
    found: list[Representation] = []
    for r in accept:
        if r.media_type in ("*/*", "multipart/*"):
            found.append(Representation(True, DICOM, stored))
        elif r.media_type == "multipart/related" and r.type_param in ("", "*/*", DICOM):
            syntax = _requested(r.transfer_syntax) or stored
            found.append(Representation(True, DICOM, syntax))
        elif r.media_type == DICOM:
            syntax = _requested(r.transfer_syntax) or stored
            found.append(Representation(False, DICOM, syntax))
    if not found:
        raise NotAcceptable(
            "none of the accepted media types can be served: instances are sent as "
            'multipart/related; type="application/dicom" (or application/dicom for one '
            "instance), in the stored transfer syntax or the one asked for with "
            "transfer-syntax=<UID>; application/zip downloads a study or series"
        )
    return found


def _rle_alias(media_type: str) -> str:
    return "image/x-dicom-rle" if media_type == "image/dicom-rle" else media_type


def _frame_syntax(media_type: str, requested: str | None, stored: str) -> str | None:
    """The syntax to send frames of `media_type` in (None: that media type cannot carry the
    requested syntax)."""
    if media_type == OCTET_STREAM:
        if requested is None or requested in NATIVE_LITTLE_ENDIAN:
            return stored if stored in NATIVE else EXPLICIT_VR_LITTLE_ENDIAN
        return None
    if requested is None:
        # The stored encoding when it is already of this media type (a JPEG baseline frame
        # asked for as image/jpeg), else the media type's RESTful default.
        stored_type = frame_media_type(stored)
        if stored_type in (media_type, _rle_alias(media_type)):
            return stored
        return DEFAULT_SYNTAX.get(media_type)
    return requested if requested in syntaxes_of(media_type) else None


def frame_candidates(accept: Sequence[MediaRange], stored: str) -> list[Representation]:
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
            wanted = OCTET_STREAM
        if r.transfer_syntax == ANY_SYNTAX and wanted in (OCTET_STREAM, "image/*"):
            # OHIF asks for octet-stream with transfer-syntax=*: it takes frames as stored.
            found.append(Representation(multipart, stored_type, stored))
            continue
        syntax = _frame_syntax(_rle_alias(wanted), _requested(r.transfer_syntax), stored)
        if syntax is not None:
            media_type = OCTET_STREAM
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


def peer_targets(stored: str, accepted: Sequence[str]) -> list[str]:
    """The syntaxes to try for a peer that accepted `accepted` (C-MOVE, C-GET), best first:
    the stored one when accepted (sent as it is), then native ones, then the peer's order."""
    targets = [stored] if stored in accepted else []
    targets += [s for s in _PEER_PREFERENCE if s in accepted and s not in targets]
    targets += [s for s in accepted if s not in targets]
    return targets


def rendered_media_type(ranges: Sequence[MediaRange], *, allow_gif: bool) -> str | None:
    """The media type to render for `ranges` (q=0 ones included: they exclude a type): the
    most preferred of image/jpeg, image/png (and image/gif when `allow_gif`); `*/*`,
    `image/*` or no range at all give image/jpeg unless excluded. None: none can be."""
    offered = [t for t in RENDERED_MEDIA_TYPES if allow_gif or t != "image/gif"]
    excluded = {r.media_type for r in ranges if r.q <= 0}  # q=0: "not acceptable"
    for r in ranges:
        if r.q <= 0:
            continue
        if r.media_type in ("*/*", "image/*"):
            choice = next((t for t in offered if t not in excluded), None)
            if choice is not None:
                return choice
        elif r.media_type in offered and r.media_type not in excluded:
            return r.media_type
    return offered[0] if not ranges else None


def uri_media_type(ranges: Sequence[MediaRange]) -> str | None:
    """What a WADO-URI contentType list (by preference, PS3.18 9.1.2.1.6) gets: the first
    listed type that can be produced, image/jpeg for a wildcard; None: none can."""
    for r in ranges:
        if r.q <= 0:
            continue
        if r.media_type in (*RENDERED_MEDIA_TYPES, DICOM):
            return r.media_type
        if r.media_type in ("*/*", "image/*"):
            return RENDERED_MEDIA_TYPES[0]
    return None


@dataclass(frozen=True)
class InstancePlan:
    """How one whole instance is sent: as stored (`transcoder` None), or converted."""

    instance: StoredInstance
    rep: Representation
    source: PixelSource | None = None
    transcoder: Transcoder | None = None

    @property
    def as_stored(self) -> bool:
        return self.transcoder is None


@dataclass(frozen=True)
class FramePlan:
    """How frames are sent: their stored byte ranges (`ranges`, byte-swapped by `swap`), or
    decoded and encoded one by one by `transcoder`."""

    rep: Representation
    ranges: list[FrameRanges] | None = None
    swap: Swap | None = None
    source: PixelSource | None = None
    transcoder: Transcoder | None = None


class Planner:
    """Plans against the stored data: opens an instance for pixel work only when a
    conversion is considered, and tries the candidates in order until one can be made."""

    def __init__(self, retrieve: RetrieveService, imaging: ImagingService) -> None:
        self.retrieve = retrieve
        self.imaging = imaging

    async def instance(
        self,
        access: Access,
        instance: StoredInstance,
        candidates: Sequence[Representation],
        *,
        exact: bool = False,
    ) -> InstancePlan:
        """The first of `candidates` (see `instance_candidates`) that can be produced;
        NotAcceptable (the last refusal) when none can. With `exact` the syntax is the one
        asked for even without pixel data (a DIMSE context is for that syntax alone)."""
        stored = instance.transfer_syntax_uid
        refusals: list[NotAcceptable] = []
        source: PixelSource | None = None
        for rep in candidates:
            if not needs_transcoding(rep, stored):
                return InstancePlan(instance, rep)
            source = source or await self.imaging.open(access, instance)
            target = rep.transfer_syntax
            if not exact and not source.has_pixels and target not in NATIVE:
                # Without pixel data there is nothing to compress: Explicit VR Little
                # Endian is what a compressed syntax would amount to.
                target = EXPLICIT_VR_LITTLE_ENDIAN
                if stored in NATIVE_LITTLE_ENDIAN:
                    return InstancePlan(instance, replace(rep, transfer_syntax=stored))
            transcoder = self._transcoder(source, target, refusals)
            if transcoder is not None:
                planned = replace(rep, transfer_syntax=target)
                return InstancePlan(instance, planned, source, transcoder)
        raise _refused(refusals, f"instance {instance.sop_instance_uid}")

    async def for_peer(
        self, access: Access, instance: StoredInstance, accepted: Sequence[str]
    ) -> InstancePlan:
        """A plan for a DIMSE peer that accepted the `accepted` syntaxes for the instance's
        SOP class (see `peer_targets`)."""
        candidates = [
            Representation(False, DICOM, s)
            for s in peer_targets(instance.transfer_syntax_uid, accepted)
        ]
        if not candidates:
            raise NotAcceptable(
                f"instance {instance.sop_instance_uid} cannot be sent: the receiver accepted "
                "no transfer syntax for its SOP class"
            )
        return await self.instance(access, instance, candidates, exact=True)

    async def frames(
        self,
        access: Access,
        instance: StoredInstance,
        numbers: Sequence[int],
        candidates: Sequence[Representation],
    ) -> FramePlan:
        """The first of `candidates` (see `frame_candidates`) the frames `numbers` can be
        sent in: straight from the stored ranges when no conversion is needed, else through
        a transcoder (frames that were not indexed, deflated files say, always are)."""
        stored = instance.transfer_syntax_uid
        refusals: list[NotAcceptable] = []
        source: PixelSource | None = None
        for rep in candidates:
            if not needs_transcoding(rep, stored) and instance.frames:
                ranges = self.retrieve.frame_ranges(instance, numbers)
                swap = await self.retrieve.pixel_swap(access, instance)
                return FramePlan(rep, ranges=ranges, swap=swap)
            # Every frame is produced before the first byte: header values may be decoded
            # as they are read, damage is then a 501 all the same.
            source = source or await self.imaging.open(access, instance, check_values=False)
            target = rep.transfer_syntax
            if target in NATIVE:
                target = EXPLICIT_VR_LITTLE_ENDIAN  # native frames are sent little endian
            transcoder = self._transcoder(source, target, refusals)
            if transcoder is not None:
                self.imaging.check_frames(source, numbers)
                planned = replace(rep, transfer_syntax=target)
                return FramePlan(planned, source=source, transcoder=transcoder)
        raise _refused(refusals, f"frames of instance {instance.sop_instance_uid}")

    def _transcoder(
        self, source: PixelSource, target: str, refusals: list[NotAcceptable]
    ) -> Transcoder | None:
        """A transcoder to `target`, or None with the reason added to `refusals`."""
        try:
            return self.imaging.transcoder(source, target)
        except NotAcceptable as exc:
            refusals.append(exc)
            return None


def _refused(refusals: list[NotAcceptable], what: str) -> NotAcceptable:
    """Why nothing could be planned: the last candidate's refusal (the least preferred)."""
    if refusals:
        return refusals[-1]
    return NotAcceptable(f"{what} cannot be sent in any accepted representation")
