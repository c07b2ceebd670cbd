"""WADO-RS: Retrieve (PS3.18 10.4): instances, metadata, frames and bulk data."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from app.audit.event import AuditAction
from app.auth.principal import Access
from app.dicom.instance import BULK_BASE, FrameRanges
from app.dicom.multipart import closing, content_type_header, new_boundary, part_head
from app.digits import INT32, NumberError, parse_int
from app.services.archive import Archive
from app.services.errors import BadRequest, NotAcceptable, Unsupported
from app.services.imaging import PixelSource, Transcoder
from app.services.plan import (
    InstancePlan,
    MediaRange,
    Representation,
    frame_candidates,
    instance_candidates,
)
from app.services.ports import StoredInstance
from app.services.retrieve import Swap
from app.web.access import request_access
from app.web.auditing import audited_read, audited_stream
from app.web.download import wants_zip, zipped
from app.web.errors import path_uids
from app.web.negotiation import parse_accept
from app.web.ranges import ByteRange, parse_range
from app.web.streaming import (
    FileSegment,
    Part,
    Segment,
    SegmentedResponse,
    bytes_part,
    multipart_response,
    opened,
    produced_first,
)
from app.web.urls import base_url, instance_url

log = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
_JSON_TYPES = ("*/*", "application/*", "application/dicom+json", "application/json")
_PIXEL_DATA_PATH = "7FE00010"


def requested_range(request: Request, total: int, etag: str) -> ByteRange | None:
    """The byte range a Range header asks for (None: the whole representation)."""
    return parse_range(
        request.headers.get("range"), total, request.headers.get("if-range"), f'"{etag}"'
    )


def _archive(request: Request) -> Archive:
    archive: Archive = request.app.state.archive
    return archive


async def _plan(
    archive: Archive, access: Access, instance: StoredInstance, accept: list[MediaRange]
) -> InstancePlan:
    """The first accepted representation of `instance` that can be produced."""
    candidates = instance_candidates(accept, instance.transfer_syntax_uid)
    return await archive.plan.instance(access, instance, candidates)


async def _instance_body(archive: Archive, plan: InstancePlan) -> tuple[AsyncIterator[bytes], int]:
    """The PS3.10 bytes of a planned instance and their length. A transcoded instance is
    produced whole first, so an error in it comes before its first byte."""
    if plan.transcoder is None or plan.source is None:
        return await opened(archive.retrieve.content(plan.instance)), plan.instance.size
    return await archive.imaging.transcoded(plan.source, plan.transcoder)


async def retrieve_instances(request: Request) -> Response:
    """Study, series or instance retrieval as PS3.10 files: as stored, transcoded when the
    Accept header names another transfer syntax, or zipped (application/zip)."""
    archive = _archive(request)
    access = request_access(request)
    study, series, sop = path_uids(request)
    assert study is not None
    instances = await audited_read(
        request,
        access,
        AuditAction.INSTANCES_TRANSFERRED,
        study,
        archive.retrieve.instances(access, study, series, sop),
    )
    accept = parse_accept(request.headers.get("accept"))
    if wants_zip(accept):
        return await zipped(request, archive, access, instances)
    plans = [await _plan(archive, access, inst, accept) for inst in instances]
    if not plans[0].rep.multipart:
        if len(plans) > 1:
            raise NotAcceptable(
                "application/dicom holds one instance; ask for multipart/related; "
                'type="application/dicom" to retrieve a study or series'
            )
        return await _single_instance(request, archive, access, plans[0])
    as_stored = all(plan.as_stored for plan in plans)
    if as_stored and archive.retrieve.has_local_file(plans[0].instance):
        return await _stored_files(request, access, plans, multipart=True)
    boundary = new_boundary()

    async def body() -> AsyncIterator[bytes]:
        for k, plan in enumerate(plans):
            try:
                content, length = await _instance_body(archive, plan)
            except (Unsupported, NotAcceptable) as exc:
                if k == 0:
                    raise  # nothing sent yet: the whole request gets the error status
                # PS3.18 10.4.3 lets a retrieve omit instances it cannot return (its 202
                # warning cannot be sent once the 200 has gone out): the part is left out
                # and the body still ends with its closing boundary.
                log.warning(
                    "retrieve of %s: instance %s omitted from the response: %s",
                    study,
                    plan.instance.sop_instance_uid,
                    type(exc).__name__,
                )
                continue
            yield part_head(boundary, plan.rep.content_type, {"Content-Length": str(length)})
            async for chunk in content:
                yield chunk
            yield b"\r\n"
        yield closing(boundary)

    transferred = AuditAction.INSTANCES_TRANSFERRED
    return StreamingResponse(
        await opened(audited_stream(request, access, transferred, instances, body())),
        media_type=content_type_header(boundary, "application/dicom"),
    )


async def _stored_files(
    request: Request,
    access: Access,
    plans: Sequence[InstancePlan],
    multipart: bool,
    headers: dict[str, str] | None = None,
) -> Response:
    """Instances sent as stored from the blob store's own files (each opened and its size
    checked when its turn comes), with a Content-Length: zero-copy under `pacs serve`.
    One instance as the whole body unless `multipart`."""
    retrieve = _archive(request).retrieve
    boundary = new_boundary()
    if multipart:
        heads = [
            part_head(boundary, p.rep.content_type, {"Content-Length": str(p.instance.size)})
            for p in plans
        ]
        after, tail = b"\r\n", closing(boundary)
        media_type = content_type_header(boundary, "application/dicom")
    else:
        heads, after, tail = [b""], b"", b""
        media_type = plans[0].rep.content_type
    length = sum(len(h) + p.instance.size + len(after) for h, p in zip(heads, plans, strict=True))

    async def segments() -> AsyncIterator[Segment]:
        for head, plan in zip(heads, plans, strict=True):
            handle = retrieve.open_stored(plan.instance)
            assert handle is not None  # has_local_file
            if head:
                yield head
            yield FileSegment(handle, 0, plan.instance.size)
            if after:
                yield after
        if tail:
            yield tail

    transferred = AuditAction.INSTANCES_TRANSFERRED
    instances = [p.instance for p in plans]
    return SegmentedResponse(
        await opened(audited_stream(request, access, transferred, instances, segments())),
        length + len(tail),
        media_type,
        headers,
    )


async def plan_response(
    request: Request,
    archive: Archive,
    access: Access,
    instance: StoredInstance,
    accept: list[MediaRange],
) -> Response:
    """One instance as a single application/dicom body, converted as `accept` asks."""
    plan = await _plan(archive, access, instance, accept)
    return await _single_instance(request, archive, access, plan)


async def _single_instance(
    request: Request, archive: Archive, access: Access, plan: InstancePlan
) -> Response:
    headers = {"Accept-Ranges": "bytes"} if plan.transcoder is None else {}
    if plan.transcoder is None:
        byte_range = requested_range(request, plan.instance.size, plan.instance.sha256)
        if byte_range is not None:
            return await _partial(
                archive.retrieve.read_ranges(
                    plan.instance, ((byte_range.start, byte_range.length),)
                ),
                byte_range,
                plan.rep.content_type,
                plan.instance.sha256,
            )
        headers["ETag"] = f'"{plan.instance.sha256}"'
        if archive.retrieve.has_local_file(plan.instance):
            return await _stored_files(request, access, [plan], multipart=False, headers=headers)
    content, length = await _instance_body(archive, plan)
    transferred = AuditAction.INSTANCES_TRANSFERRED
    content = audited_stream(request, access, transferred, [plan.instance], content)
    headers["Content-Length"] = str(length)
    return StreamingResponse(
        await opened(content), media_type=plan.rep.content_type, headers=headers
    )


async def _partial(
    chunks: AsyncIterator[bytes], byte_range: ByteRange, media_type: str, etag: str
) -> Response:
    return StreamingResponse(
        await opened(chunks),
        status_code=206,
        media_type=media_type,
        headers={
            "Content-Range": byte_range.content_range(),
            "Content-Length": str(byte_range.length),
            "Accept-Ranges": "bytes",
            "ETag": f'"{etag}"',
        },
    )


async def retrieve_metadata(request: Request) -> Response:
    archive = _archive(request)
    accept = parse_accept(request.headers.get("accept"))
    if not any(r.media_type in _JSON_TYPES for r in accept):
        raise NotAcceptable("metadata is available as application/dicom+json only")
    study, series, sop = path_uids(request)
    assert study is not None
    access = request_access(request)
    found = await audited_read(
        request,
        access,
        AuditAction.INSTANCES_ACCESSED,
        study,
        archive.retrieve.metadata(access, study, series, sop),
    )
    base = base_url(request)
    placeholder = BULK_BASE.encode()

    async def body() -> AsyncIterator[bytes]:
        for i, meta in enumerate(found):
            url = instance_url(
                base, meta.study_instance_uid, meta.series_instance_uid, meta.sop_instance_uid
            )
            yield (b"[" if i == 0 else b",") + meta.json.replace(placeholder, url.encode())
        yield b"]"

    return StreamingResponse(body(), media_type=DICOM_JSON)


def frame_numbers(text: str, limit: int) -> list[int]:
    """The frame list of a frames/ path: at most `limit` ASCII frame numbers from 1, none
    listed twice (PS3.18's frame list holds "non-duplicate frame numbers"; repeats would only
    make the response larger)."""
    items = text.split(",")
    if len(items) > limit:
        raise BadRequest(
            f"the frame list names {len(items)} frames, over the limit of {limit} per request"
            " (PACS_MAX_FRAMES_PER_REQUEST)"
        )
    numbers: list[int] = []
    for item in items:
        try:
            numbers.append(parse_int(item, 1, INT32[1]))
        except NumberError:
            raise BadRequest(
                f"invalid frame list {text!r}: expected frame numbers from 1 in ASCII digits,"
                " comma-separated"
            ) from None
    if len(set(numbers)) != len(numbers):
        raise BadRequest(f"invalid frame list {text!r}: a frame number is listed twice")
    return numbers


async def _instance(request: Request, access: Access) -> StoredInstance:
    archive = _archive(request)
    study, series, sop = path_uids(request)
    assert study is not None and series is not None and sop is not None
    found = await audited_read(  # frames, bulk data
        request,
        access,
        AuditAction.INSTANCES_ACCESSED,
        study,
        archive.retrieve.instances(access, study, series, sop),
    )
    return found[0]


async def _send_frames(
    frames: Sequence[Part], rep: Representation, headers: dict[str, str] | None = None
) -> Response:
    if not rep.multipart and len(frames) == 1:
        content, size = await frames[0]()
        return StreamingResponse(
            content,
            media_type=rep.content_type,
            headers={**(headers or {}), "Content-Length": str(size)},
        )
    return await multipart_response(frames, rep.content_type, rep.media_type)


def _stored_frames(
    archive: Archive, instance: StoredInstance, frames: Sequence[FrameRanges], swap: Swap | None
) -> list[Part]:
    def part(ranges: FrameRanges) -> Part:
        async def send() -> tuple[AsyncIterator[bytes], int]:
            content = await opened(archive.retrieve.read_ranges(instance, ranges, swap))
            return content, sum(n for _, n in ranges)

        return send

    return [part(ranges) for ranges in frames]


def _transcoded_frames(
    archive: Archive, source: PixelSource, transcoder: Transcoder, numbers: Sequence[int]
) -> list[Part]:
    def part(number: int) -> Part:
        return bytes_part(lambda: archive.imaging.transcoded_frame(source, transcoder, number))

    return [part(number) for number in numbers]


async def _frames_response(
    archive: Archive,
    access: Access,
    instance: StoredInstance,
    numbers: Sequence[int],
    accept: list[MediaRange],
) -> Response:
    """Frames in the first accepted representation that can be produced: straight from the
    stored ranges when no conversion is needed, else decoded and encoded one by one."""
    candidates = frame_candidates(accept, instance.transfer_syntax_uid)
    plan = await archive.plan.frames(access, instance, numbers, candidates)
    if plan.ranges is not None:
        stored = _stored_frames(archive, instance, plan.ranges, plan.swap)
        return await _send_frames(stored, plan.rep)
    assert plan.source is not None and plan.transcoder is not None
    parts = _transcoded_frames(archive, plan.source, plan.transcoder, numbers)
    if len(parts) > 1:
        # Every frame is decoded before the first byte: frame k cannot be left out.
        parts = await produced_first(parts)
    return await _send_frames(parts, plan.rep)


async def retrieve_frames(request: Request) -> Response:
    archive = _archive(request)
    access = request_access(request)
    numbers = frame_numbers(request.path_params["frames"], archive.settings.max_frames_per_request)
    instance = await _instance(request, access)
    accept = parse_accept(request.headers.get("accept"))
    return await _frames_response(archive, access, instance, numbers, accept)


async def retrieve_bulkdata(request: Request) -> Response:
    archive = _archive(request)
    access = request_access(request)
    path = request.path_params["path"].strip("/").upper()
    instance = await _instance(request, access)
    accept = parse_accept(request.headers.get("accept"))
    if path == _PIXEL_DATA_PATH and instance.encapsulated and instance.frames:
        # Encapsulated pixel data has no single value: it is served frame by frame.
        numbers = range(1, len(instance.frames) + 1)
        return await _frames_response(archive, access, instance, numbers, accept)
    found = archive.retrieve.bulk_range(instance, path)
    if not any(
        r.media_type in ("*/*", "multipart/*", "multipart/related", "application/octet-stream")
        for r in accept
    ):
        raise NotAcceptable("bulk data is available as application/octet-stream only")
    swap = archive.retrieve.bulk_swap(instance, found)
    if path == _PIXEL_DATA_PATH:
        swap = await archive.retrieve.pixel_swap(access, instance)
    octet = Representation(True, "application/octet-stream", instance.transfer_syntax_uid)
    if accept[0].media_type == "application/octet-stream":
        # A single part: byte ranges of the value may be asked for (RFC 9110 14).
        etag = f"{instance.sha256}-{path}"
        byte_range = requested_range(request, found.length, etag)
        if byte_range is not None:
            ranges = ((found.offset + byte_range.start, byte_range.length),)
            chunks = archive.retrieve.read_ranges(instance, ranges, swap)
            return await _partial(chunks, byte_range, octet.content_type, etag)
        octet = Representation(False, octet.media_type, octet.transfer_syntax)
        headers = {"Accept-Ranges": "bytes", "ETag": f'"{etag}"'}
    else:
        headers = {}
    value = ((found.offset, found.length),)
    return await _send_frames(_stored_frames(archive, instance, [value], swap), octet, headers)
