"""WADO-RS: Retrieve (PS3.18 10.4): instances, metadata, frames and bulk data."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from app.dicom.instance import BULK_BASE, FrameRanges
from app.dicom.multipart import closing, content_type_header, new_boundary, part_head
from app.dicom.transfer_syntax import EXPLICIT_VR_LITTLE_ENDIAN
from app.services.archive import Archive
from app.services.errors import BadRequest, NotAcceptable
from app.services.ports import StoredInstance
from app.services.retrieve import Swap
from app.web.errors import path_uids
from app.web.negotiation import Representation, choose_frames, choose_instance, parse_accept
from app.web.streaming import opened
from app.web.urls import base_url, instance_url

DICOM_JSON = "application/dicom+json"
_JSON_TYPES = ("*/*", "application/*", "application/dicom+json", "application/json")
_PIXEL_DATA_PATH = "7FE00010"


def _archive(request: Request) -> Archive:
    archive: Archive = request.app.state.archive
    return archive


def _part_type(rep: Representation) -> str:
    syntax = rep.transfer_syntax
    if rep.media_type == "application/octet-stream":
        syntax = EXPLICIT_VR_LITTLE_ENDIAN  # native frames are sent little endian
    return f"{rep.media_type}; transfer-syntax={syntax}"


async def retrieve_instances(request: Request) -> Response:
    """Study, series or instance retrieval as PS3.10 files, streamed as stored."""
    archive = _archive(request)
    study, series, sop = path_uids(request)
    assert study is not None
    instances = await archive.retrieve.instances(study, series, sop)
    accept = parse_accept(request.headers.get("accept"))
    reps = [choose_instance(accept, inst.transfer_syntax_uid) for inst in instances]
    if not reps[0].multipart:
        if len(instances) > 1:
            raise NotAcceptable(
                "application/dicom holds one instance; ask for multipart/related; "
                'type="application/dicom" to retrieve a study or series'
            )
        return StreamingResponse(
            await opened(archive.retrieve.content(instances[0])),
            media_type=_part_type(reps[0]),
            headers={"Content-Length": str(instances[0].size)},
        )
    boundary = new_boundary()

    async def body() -> AsyncIterator[bytes]:
        for inst, rep in zip(instances, reps, strict=True):
            content = await opened(archive.retrieve.content(inst))
            yield part_head(boundary, _part_type(rep), {"Content-Length": str(inst.size)})
            async for chunk in content:
                yield chunk
            yield b"\r\n"
        yield closing(boundary)

    return StreamingResponse(
        await opened(body()),
        media_type=content_type_header(boundary, "application/dicom"),
    )


async def retrieve_metadata(request: Request) -> Response:
    archive = _archive(request)
    accept = parse_accept(request.headers.get("accept"))
    if not any(r.media_type in _JSON_TYPES for r in accept):
        raise NotAcceptable("metadata is available as application/dicom+json only")
    study, series, sop = path_uids(request)
    assert study is not None
    found = await archive.retrieve.metadata(study, series, sop)
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


def _frame_numbers(text: str) -> list[int]:
    numbers = []
    for raw in text.split(","):
        item = raw.strip()
        if not item.isdigit() or int(item) < 1:
            raise BadRequest(
                f"invalid frame list {text!r}: expected frame numbers from 1, comma-separated"
            )
        numbers.append(int(item))
    return numbers


async def _instance(request: Request) -> StoredInstance:
    archive = _archive(request)
    study, series, sop = path_uids(request)
    assert study is not None and series is not None and sop is not None
    return (await archive.retrieve.instances(study, series, sop))[0]


async def _send_frames(
    archive: Archive,
    instance: StoredInstance,
    frames: Sequence[FrameRanges],
    rep: Representation,
    swap: Swap | None,
) -> Response:
    if not rep.multipart and len(frames) == 1:
        return StreamingResponse(
            await opened(archive.retrieve.read_ranges(instance, frames[0], swap)),
            media_type=_part_type(rep),
            headers={"Content-Length": str(sum(n for _, n in frames[0]))},
        )
    boundary = new_boundary()

    async def body() -> AsyncIterator[bytes]:
        for ranges in frames:
            size = sum(n for _, n in ranges)
            content = await opened(archive.retrieve.read_ranges(instance, ranges, swap))
            yield part_head(boundary, _part_type(rep), {"Content-Length": str(size)})
            async for chunk in content:
                yield chunk
            yield b"\r\n"
        yield closing(boundary)

    return StreamingResponse(
        await opened(body()), media_type=content_type_header(boundary, rep.media_type)
    )


async def retrieve_frames(request: Request) -> Response:
    archive = _archive(request)
    numbers = _frame_numbers(request.path_params["frames"])
    instance = await _instance(request)
    accept = parse_accept(request.headers.get("accept"))
    rep = choose_frames(accept, instance.transfer_syntax_uid, instance.encapsulated)
    frames = archive.retrieve.frame_ranges(instance, numbers)
    swap = await archive.retrieve.pixel_swap(instance)
    return await _send_frames(archive, instance, frames, rep, swap)


async def retrieve_bulkdata(request: Request) -> Response:
    archive = _archive(request)
    path = request.path_params["path"].strip("/").upper()
    instance = await _instance(request)
    accept = parse_accept(request.headers.get("accept"))
    if path == _PIXEL_DATA_PATH and instance.encapsulated and instance.frames:
        # Encapsulated pixel data has no single value: it is served frame by frame.
        rep = choose_frames(accept, instance.transfer_syntax_uid, instance.encapsulated)
        frames = archive.retrieve.frame_ranges(instance, range(1, len(instance.frames) + 1))
        return await _send_frames(archive, instance, frames, rep, None)
    found = archive.retrieve.bulk_range(instance, path)
    octet = Representation(True, "application/octet-stream", instance.transfer_syntax_uid)
    if not any(
        r.media_type in ("*/*", "multipart/*", "multipart/related", "application/octet-stream")
        for r in accept
    ):
        raise NotAcceptable("bulk data is available as application/octet-stream only")
    if accept[0].media_type == "application/octet-stream":
        octet = Representation(False, octet.media_type, octet.transfer_syntax)
    swap = archive.retrieve.bulk_swap(instance, found)
    if path == _PIXEL_DATA_PATH:
        swap = await archive.retrieve.pixel_swap(instance)
    return await _send_frames(archive, instance, [((found.offset, found.length),)], octet, swap)
