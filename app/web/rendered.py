"""WADO-RS rendered resources and thumbnails (PS3.18 8.3.5, 10.4.1.1.3, 10.4.1.1.4).

An instance renders as one image: its first frame, or with image/gif every frame as an
animation. A frame list renders as one image for one frame and as multipart/related (or an
animated GIF) for several. A study or series renders as multipart/related with one image per
instance that has pixel data. Thumbnails are one small image of a representative instance:
the middle instance of the first series with images.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import Response

from app.audit.event import AuditAction
from app.auth.principal import Access
from app.services.archive import Archive
from app.services.errors import BadRequest, NotAcceptable, NotFound
from app.services.imaging import RenderOptions
from app.services.ports import StoredInstance
from app.web.access import request_access
from app.web.auditing import audited_read
from app.web.errors import path_uids
from app.web.render_params import (
    NotRenderable,
    RenderParamError,
    check_output_size,
    parse_render_options,
)
from app.web.streaming import Part, bytes_part, multipart_response, produced_first
from app.web.wado import frame_numbers

THUMBNAIL_SIZE = 128


def _archive(request: Request) -> Archive:
    archive: Archive = request.app.state.archive
    return archive


def _options(request: Request, *, allow_gif: bool) -> RenderOptions:
    try:
        return parse_render_options(
            request.query_params,
            request.headers.get("accept"),
            allow_gif=allow_gif,
            max_pixels=_archive(request).settings.max_rendered_pixels,
        )
    except NotRenderable as exc:
        raise NotAcceptable(str(exc)) from exc
    except RenderParamError as exc:
        raise BadRequest(str(exc)) from exc


def _has_pixels(instance: StoredInstance) -> bool:
    return bool(instance.frames) or instance.pixel_data is not None


async def _instances(request: Request, access: Access) -> list[StoredInstance]:
    study, series, sop = path_uids(request)
    assert study is not None
    return await audited_read(
        request,
        access,
        AuditAction.INSTANCES_ACCESSED,
        study,
        _archive(request).retrieve.instances(access, study, series, sop),
    )


def _image_response(data: bytes, media_type: str) -> Response:
    return Response(data, media_type=media_type)


def check_animation(archive: Archive, options: RenderOptions, frames: int) -> None:
    """An animated GIF holds every frame at the viewport's size: PACS_MAX_RENDERED_PIXELS
    bounds them all (without a viewport frames keep the object's own size)."""
    viewport = options.viewport
    if viewport is None or frames < 2 or options.media_type != "image/gif":
        return
    limit = archive.settings.max_rendered_pixels
    try:
        check_output_size("viewport", viewport.width, viewport.height, limit, frames)
    except RenderParamError as exc:
        raise BadRequest(str(exc)) from None


async def render_instance(
    archive: Archive, access: Access, instance: StoredInstance, options: RenderOptions
) -> bytes:
    """An instance as one image: all frames as a GIF animation, else the first."""
    return await archive.imaging.render_stored(
        access, instance, options, check=lambda frames: check_animation(archive, options, frames)
    )


async def retrieve_rendered(request: Request) -> Response:
    """Rendered study, series or instance."""
    archive = _archive(request)
    access = request_access(request)
    instances = await _instances(request, access)
    _, _, sop = path_uids(request)
    options = _options(request, allow_gif=True)
    if sop is not None:
        # One image, produced whole before the response: header values decoded as read.
        data = await render_instance(archive, access, instances[0], options)
        return _image_response(data, options.media_type)
    images = [i for i in instances if _has_pixels(i)]
    if not images:
        raise NotFound("none of the instances in scope has pixel data to render")
    for instance in images:  # before the first byte of the response
        check_animation(archive, options, len(instance.frames))

    def part(instance: StoredInstance) -> Part:
        async def image() -> bytes:  # whole before its part starts, as above
            return await render_instance(archive, access, instance, options)

        return bytes_part(image)

    parts = [part(instance) for instance in images]
    # One image per instance: one that cannot be rendered is left out (see multipart_response).
    return await multipart_response(parts, options.media_type, options.media_type, omissible=True)


async def retrieve_rendered_frames(request: Request) -> Response:
    archive = _archive(request)
    access = request_access(request)
    numbers = frame_numbers(request.path_params["frames"], archive.settings.max_frames_per_request)
    instances = await _instances(request, access)
    options = _options(request, allow_gif=True)
    # One image is produced whole before the response; parts after the first are not.
    if len(numbers) == 1 or options.media_type == "image/gif":
        check = lambda frames: check_animation(archive, options, frames)  # noqa: E731
        data = await archive.imaging.render_stored(access, instances[0], options, numbers, check)
        return _image_response(data, options.media_type)
    source = await archive.imaging.open(access, instances[0])
    archive.imaging.check_frames(source, numbers)

    def part(number: int) -> Part:
        return bytes_part(lambda: archive.imaging.rendered(source, [number], options))

    parts = await produced_first([part(number) for number in numbers])
    return await multipart_response(parts, options.media_type, options.media_type)


def _representative(instances: Sequence[StoredInstance]) -> StoredInstance:
    """The middle image of the first series that has images."""
    images = [i for i in instances if _has_pixels(i)]
    if not images:
        raise NotFound("none of the instances in scope has pixel data for a thumbnail")
    first_series = [i for i in images if i.series_instance_uid == images[0].series_instance_uid]
    return first_series[(len(first_series) - 1) // 2]


async def retrieve_thumbnail(request: Request) -> Response:
    """A small image of a study, series, instance or frame (PS3.18 10.4.1.1.4)."""
    archive = _archive(request)
    access = request_access(request)
    instances = await _instances(request, access)
    options = _options(request, allow_gif=False)
    size = THUMBNAIL_SIZE
    if options.viewport is not None:
        size = max(1, min(options.viewport.width, options.viewport.height))
    frame = None
    if "frames" in request.path_params:
        numbers = frame_numbers(
            request.path_params["frames"], archive.settings.max_frames_per_request
        )
        frame = numbers[0]
    representative = _representative(instances)
    data = await archive.imaging.cached_thumbnail(access, representative, options, size, frame)
    return _image_response(data, options.media_type)
