"""Pixel work for retrieval: transcoding, decoding and rendering, one frame at a time.

The protocol layers reach app/imaging through this module only (its rendering options and
window types are re-exported here); which representation to produce is the plan's choice
(plan.py).

The stored file is never loaded whole when ingest indexed its frames: the header (everything
before the pixel data) and each frame are ranged reads, and only the frames a request names
are decoded. Objects whose frames could not be indexed (deflated files, odd layouts) are read
whole, up to `WHOLE_FILE_LIMIT`, and their frames taken from pydicom's reading.

Decoding and encoding are CPU-bound and run in worker threads, at most one per core at a time
so that a burst of rendering requests cannot starve the event loop's other work.
"""

from __future__ import annotations

import asyncio
import copy
import io
import logging
import os
import tempfile
import warnings
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TypeVar

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from app.auth.principal import Access, Permission
from app.dicom.byteorder import swap_binary_values
from app.dicom.transfer_syntax import EXPLICIT_VR_BIG_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN
from app.imaging.codecs import PIXEL_KEYWORDS, CodecError, Frame, decode_frame
from app.imaging.display import WINDOW_FUNCTIONS, RenderError, Window, window_problem
from app.imaging.render import (
    ANNOTATIONS,
    RENDERED_MEDIA_TYPES,
    RenderOptions,
    Viewport,
    ViewportError,
    render,
    thumbnail,
)
from app.imaging.transcode import NotTranscodable, Transcoder
from app.services.errors import (
    ArchiveError,
    BadRequest,
    NotAcceptable,
    NotFound,
    Overloaded,
    StorageInconsistent,
    Unsupported,
)
from app.services.ports import StoredInstance
from app.services.retrieve import RetrieveService, Swap, missing_from_storage
from app.services.thumbnail_cache import ThumbnailCache

# What the protocol layers take from app/imaging, through this module.
__all__ = [
    "ANNOTATIONS",
    "RENDERED_MEDIA_TYPES",
    "WINDOW_FUNCTIONS",
    "DamagedData",
    "ImagingService",
    "PixelSource",
    "RenderOptions",
    "Transcoder",
    "Viewport",
    "Window",
    "window_problem",
]

# Objects whose frames were not indexed are read whole to get at their pixels; beyond this
# size the request is refused (501) rather than risk the server's memory.
WHOLE_FILE_LIMIT = 256 * 1024 * 1024
# A transcoded instance is produced whole before its first byte is sent (see `transcoded`):
# in memory up to this size, in a temporary file beyond it.
SPOOL_IN_MEMORY = 8 * 1024 * 1024
_SPOOL_CHUNK = 1024 * 1024
_SMALL_CHUNK = 64 * 1024
# Seconds a client refused for a full imaging queue is asked to wait (Retry-After).
RETRY_AFTER = 2
# What pixel work raises on purpose; anything else it raises comes from damaged data that
# the codecs and pydicom did not expect (an unknown VR, a codec panic, a truncated value).
_EXPECTED = (ArchiveError, CodecError, RenderError, ViewportError, NotTranscodable)

log = logging.getLogger(__name__)


T = TypeVar("T")


@dataclass
class PixelSource:
    """One instance opened for pixel work: its header and where its frames come from."""

    instance: StoredInstance
    header: Dataset  # the dataset without pixel data, file meta included
    frame_count: int
    swap: Swap | None  # big-endian native data is swapped on read
    # The whole dataset, for objects whose frames were not indexed; None otherwise.
    loaded: Dataset | None = None
    # The stored file, when the blob store keeps it on this machine and its frames were
    # indexed and need no swap: pixel work then reads its frames itself (see `_local`).
    path: Path | None = None

    @property
    def has_pixels(self) -> bool:
        return self.frame_count > 0

    def local_frame(self, number: int) -> bytes:
        """Frame `number` (from 1) read from `path` in the calling (worker) thread."""
        assert self.path is not None
        return _read_local(self.path, self.instance, self.instance.frames[number - 1])

    @property
    def transfer_syntax_uid(self) -> str:
        return self.instance.transfer_syntax_uid

    @cached_property
    def display_header(self) -> Dataset:
        """The header with binary values (palette and other LUT data) little endian, as the
        display pipeline reads them; the header itself stays as stored for transcoding."""
        if self.transfer_syntax_uid != EXPLICIT_VR_BIG_ENDIAN:
            return self.header
        header = copy.deepcopy(self.header)
        swap_binary_values(header)
        # pydicom reads some LUT data in the byte order the transfer syntax names: say what
        # the values now are.
        header.file_meta.TransferSyntaxUID = UID(EXPLICIT_VR_LITTLE_ENDIAN)
        header.set_original_encoding(False, True, header.original_character_set)
        return header


def _read_local(path: Path, instance: StoredInstance, ranges: Iterable[tuple[int, int]]) -> bytes:
    """Byte ranges of a stored file on this machine, read where this is called: in the
    worker thread of the pixel work that needs them, rather than a thread hop per read."""
    try:
        with path.open("rb") as handle:
            parts = [os.pread(handle.fileno(), length, offset) for offset, length in ranges]
    except FileNotFoundError:
        raise missing_from_storage(instance) from None
    data = b"".join(parts)
    if len(data) != sum(length for _, length in ranges):
        raise StorageInconsistent(
            f"the stored file of instance {instance.sop_instance_uid} is shorter than "
            "recorded when it was stored; the archive needs a consistency check"
        )
    return data


def _decode(source: PixelSource, number: int, data: bytes) -> Frame:
    try:
        return decode_frame(source.header, source.transfer_syntax_uid, data)
    except CodecError as exc:
        raise Unsupported(
            f"frame {number} of instance {source.instance.sop_instance_uid} cannot be "
            f"decoded: {exc}"
        ) from exc


def _render(
    source: PixelSource, frames: Sequence[Frame], options: RenderOptions, numbers: Sequence[int]
) -> bytes:
    pairs = [(f.pixels, f.photometric_interpretation) for f in frames]
    try:
        return render(source.display_header, pairs, options, [n - 1 for n in numbers])
    except ViewportError as exc:
        raise BadRequest(str(exc)) from exc
    except RenderError as exc:
        raise Unsupported(
            f"instance {source.instance.sop_instance_uid} cannot be rendered: {exc}"
        ) from exc


def _thumbnail(source: PixelSource, frame: Frame, media_type: str, size: int) -> bytes:
    try:
        return thumbnail(
            source.display_header, frame.pixels, frame.photometric_interpretation, media_type, size
        )
    except RenderError as exc:
        raise Unsupported(
            f"instance {source.instance.sop_instance_uid} cannot be rendered: {exc}"
        ) from exc


def _read_dataset(data: bytes, stop_before_pixels: bool) -> Dataset:
    with warnings.catch_warnings():
        # Ingest already accepted the file; pydicom's remarks on odd values are not news here.
        warnings.simplefilter("ignore")
        return dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels, force=True)


def _read_header(data: bytes) -> Dataset:
    """The header, every value decoded now (pydicom decodes lazily): a value that cannot be
    decoded fails here, before any response, rather than in the middle of a body."""
    ds = _read_dataset(data, True)
    _decode_all(ds)
    return ds


def _read_lazily(data: bytes) -> Dataset:
    """The header, values decoded by pydicom when first read."""
    return _read_dataset(data, True)


def _read_whole(data: bytes) -> Dataset:
    ds = _read_dataset(data, False)
    _decode_all(ds)
    return ds


def _decode_all(ds: Dataset) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for elem in ds.iterall():
            _ = elem.value


def _number_of_frames(ds: Dataset) -> int:
    try:
        count = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        count = 1
    return max(count, 1)


def _loaded_frame(ds: Dataset, index: int, count: int) -> bytes:
    """Frame `index` of a dataset read whole (native: little endian, as decoding wants)."""
    keyword = next((k for k in PIXEL_KEYWORDS if k in ds), None)
    if keyword is None:
        raise Unsupported("the instance has no pixel data")
    value: bytes = ds[keyword].value
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        for i, frame in enumerate(generate_frames(value, number_of_frames=count)):
            if i == index:
                return frame
        raise Unsupported(f"frame {index + 1} could not be found in the encapsulated pixel data")
    if not ds.file_meta.TransferSyntaxUID.is_little_endian:
        raise Unsupported("big-endian pixel data that was not indexed cannot be decoded")
    size = len(value) // count
    return value[index * size : (index + 1) * size]


async def _read_spool(spool: tempfile.SpooledTemporaryFile[bytes]) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(spool.read, _SPOOL_CHUNK):
            yield chunk
    finally:
        spool.close()


def _whole(options: RenderOptions, frame_count: int) -> range:
    """The frames an instance renders as: all of them as an animated GIF, else the first."""
    if options.media_type == "image/gif" and frame_count > 1:
        return range(1, frame_count + 1)
    return range(1, 2)


def _check_numbers(instance: StoredInstance, frame_count: int, numbers: Sequence[int]) -> None:
    if frame_count < 1:
        raise Unsupported(f"instance {instance.sop_instance_uid} has no pixel data")
    missing = [n for n in numbers if not 1 <= n <= frame_count]
    if missing:
        raise NotFound(
            f"frame {missing[0]} does not exist: instance "
            f"{instance.sop_instance_uid} has {frame_count} frame(s)"
        )


class DamagedData(Exception):
    """Pixel work failed in a way no codec foresaw: the stored object is damaged."""


class ImagingService:
    def __init__(
        self,
        retrieve: RetrieveService,
        workers: int | None = None,
        max_queued: int = 32,
        thumbnail_cache_bytes: int = 0,
    ) -> None:
        self.retrieve = retrieve
        # PACS_THUMBNAIL_CACHE_BYTES: encoded thumbnails kept (see thumbnail_cache.py).
        self.thumbnails = ThumbnailCache(thumbnail_cache_bytes)
        self._cpu = asyncio.Semaphore(workers or os.cpu_count() or 2)
        # PACS_MAX_QUEUED_IMAGING: pixel work that may wait for a worker before new requests
        # are refused with 503 (see `admit`).
        self.max_queued = max_queued
        self._waiting = 0

    def admit(self) -> None:
        """Refuse a new request for pixel work (Overloaded: 503 + Retry-After) when every
        worker is busy and `max_queued` pieces of work already wait. Called where a request
        starts its pixel work, before any response: once admitted, a request's later work
        waits its turn, so that a response already started is never cut short by the queue."""
        if self._cpu.locked() and self._waiting >= self.max_queued:
            raise Overloaded(
                f"too many rendering and transcoding requests: {self._waiting} wait for a "
                f"worker, the limit is {self.max_queued} (PACS_MAX_QUEUED_IMAGING); retry later",
                RETRY_AFTER,
            )

    async def _in_worker(self, work: Callable[[], T]) -> T:
        def run() -> T:
            try:
                return work()
            except StopIteration as exc:
                # A StopIteration cannot cross into the awaiting coroutine: the request
                # would hang. It is a bug wherever it comes from; make it an ordinary one.
                raise RuntimeError("StopIteration escaped from pixel work") from exc
            except _EXPECTED:
                raise
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # a Rust codec's panic is a BaseException
                # The type only: pydicom's messages may quote values, which may be patient data.
                raise DamagedData(type(exc).__name__) from exc

        self._waiting += 1
        try:
            await self._cpu.acquire()
        finally:
            self._waiting -= 1
        try:
            return await asyncio.to_thread(run)
        finally:
            self._cpu.release()

    async def _guarded(self, source: PixelSource | StoredInstance, work: Callable[[], T]) -> T:
        """`_in_worker`, with damage no codec foresaw answered as 501 naming the instance."""
        instance = source.instance if isinstance(source, PixelSource) else source
        try:
            return await self._in_worker(work)
        except DamagedData as exc:
            log.warning(
                "instance %s: pixel work failed on damaged data (%s)",
                instance.sop_instance_uid,
                exc,
            )
            raise Unsupported(
                f"instance {instance.sop_instance_uid} cannot be processed: its stored data "
                f"is damaged ({exc})"
            ) from exc

    async def open(
        self, access: Access, instance: StoredInstance, *, check_values: bool = True
    ) -> PixelSource:
        """Read the header of `instance`, found with `access` (and, when its frames are not
        indexed, all of it). With `check_values` every value of the header is decoded now, so
        that damage shows before a response starts; without, for output produced whole in
        pixel work before its response (one rendered image, a thumbnail), values are decoded
        when that work first reads them (damage is then a 501 from `_guarded` all the same):
        rendering reads a dozen elements, decoding them all cost more than the pixel work
        (2 ms of a CT slice's 30 elements, 8 ms of CT_small.dcm's 100)."""
        access.require(Permission.READ)
        self.admit()
        pixel = instance.pixel_data
        if pixel is not None and instance.frames:
            read = _read_header if check_values else _read_lazily
            swap = await self.retrieve.pixel_swap(access, instance)
            path = self._local_path(instance)
            if path is not None and swap is None:
                # Read and parsed in one worker job; frames are read by the jobs using them.
                local = path
                header = await self._guarded(
                    instance, lambda: read(_read_local(local, instance, [(0, pixel.offset)]))
                )
                return PixelSource(instance, header, len(instance.frames), None, path=path)
            data = await self.retrieve.read_bytes(instance, 0, pixel.offset)
            header = await self._guarded(instance, lambda: read(data))
            return PixelSource(instance, header, len(instance.frames), swap)
        if instance.size > WHOLE_FILE_LIMIT:
            raise Unsupported(
                f"instance {instance.sop_instance_uid} has no indexed frames and is larger "
                f"than {WHOLE_FILE_LIMIT // 2**20} MiB; its pixel data cannot be processed"
            )
        data = await self.retrieve.read_bytes(instance, 0, None)
        try:
            whole = await self._guarded(instance, lambda: _read_whole(data))
        except (InvalidDicomError, ValueError, EOFError) as exc:
            raise Unsupported(
                f"instance {instance.sop_instance_uid} cannot be read: {exc}"
            ) from exc
        has_pixels = any(k in whole for k in PIXEL_KEYWORDS)
        header = Dataset()  # the elements without pixel data; `whole` keeps them all
        for elem in whole:
            if elem.keyword not in PIXEL_KEYWORDS:
                header.add(elem)
        header.file_meta = whole.file_meta
        frames = _number_of_frames(whole) if has_pixels else 0
        return PixelSource(instance, header, frames, None, whole if has_pixels else None)

    def _local_path(self, instance: StoredInstance) -> Path | None:
        """The stored file to read frames from in pixel work itself: one on this machine
        whose frames were indexed (big-endian data, swapped on read, is not: see `open`)."""
        if instance.pixel_data is None or not instance.frames:
            return None
        return self.retrieve.blobs.local_path(instance.blob_key)

    async def render_stored(
        self,
        access: Access,
        instance: StoredInstance,
        options: RenderOptions,
        numbers: Sequence[int] | None = None,
        check: Callable[[int], None] | None = None,
    ) -> bytes:
        """`instance`, found with `access`, rendered: frames `numbers` (from 1) as one
        image, or without them the instance itself (every frame as an animation for
        image/gif, else the first). `check` is given how many frames will be drawn, before
        any pixel work. A stored file on this machine is opened, read, decoded and rendered
        in one worker job: each thread hop cost a rendered CT slice more than its parsing."""
        access.require(Permission.READ)
        path = self._local_path(instance)
        pixel = instance.pixel_data
        if path is None or pixel is None or instance.transfer_syntax_uid == EXPLICIT_VR_BIG_ENDIAN:
            source = await self.open(access, instance, check_values=False)
            chosen = list(numbers or _whole(options, source.frame_count))
            if check is not None:
                check(len(chosen))
            self.check_frames(source, chosen)
            return await self.rendered(source, chosen, options)
        self.admit()
        count = len(instance.frames)
        chosen = list(numbers or _whole(options, count))
        if check is not None:
            check(len(chosen))
        _check_numbers(instance, count, chosen)

        def work() -> bytes:
            header = _read_lazily(_read_local(path, instance, [(0, pixel.offset)]))
            source = PixelSource(instance, header, count, None, path=path)
            frames = [_decode(source, n, source.local_frame(n)) for n in chosen]
            return _render(source, frames, options, chosen)

        return await self._guarded(instance, work)

    def check_frames(self, source: PixelSource, numbers: Sequence[int]) -> None:
        _check_numbers(source.instance, source.frame_count, numbers)

    async def stored_frame(self, source: PixelSource, number: int) -> bytes:
        """Frame `number` (from 1) as stored; native data little endian."""
        self.check_frames(source, [number])
        if source.loaded is not None:
            loaded = source.loaded
            return await self._guarded(
                source, lambda: _loaded_frame(loaded, number - 1, source.frame_count)
            )
        if source.path is not None:
            return await asyncio.to_thread(source.local_frame, number)
        ranges = source.instance.frames[number - 1]
        reader = self.retrieve.read_ranges(source.instance, ranges, source.swap)
        return b"".join([chunk async for chunk in reader])

    async def decoded_frame(self, source: PixelSource, number: int) -> Frame:
        if source.path is not None:  # read in the decoding job
            self.check_frames(source, [number])
            return await self._guarded(
                source, lambda: _decode(source, number, source.local_frame(number))
            )
        data = await self.stored_frame(source, number)
        return await self._guarded(source, lambda: _decode(source, number, data))

    def transcoder(self, source: PixelSource, target: str) -> Transcoder:
        """A transcoder to `target`; NotAcceptable (406) when the conversion cannot be done."""
        declared = _number_of_frames(source.header)
        if source.has_pixels and declared != source.frame_count:
            # The output would say one count and hold another (an offset table listing fewer
            # frames than NumberOfFrames): served as stored only.
            raise Unsupported(
                f"instance {source.instance.sop_instance_uid} holds {source.frame_count} "
                f"frame(s) but its NumberOfFrames says {declared}: it can be retrieved only "
                "in its stored transfer syntax"
            )
        try:
            return Transcoder(source.header, source.transfer_syntax_uid, target)
        except NotTranscodable as exc:
            raise NotAcceptable(
                f"instance {source.instance.sop_instance_uid} cannot be sent in transfer "
                f"syntax {target}: {exc}"
            ) from exc
        except Exception as exc:  # the header's values, read here first, are damaged
            log.warning(
                "instance %s: its header cannot be read for transcoding (%s)",
                source.instance.sop_instance_uid,
                type(exc).__name__,
            )
            raise Unsupported(
                f"instance {source.instance.sop_instance_uid} cannot be transcoded: its stored "
                f"header is damaged ({type(exc).__name__})"
            ) from exc

    async def transcoded_frame(
        self, source: PixelSource, transcoder: Transcoder, number: int
    ) -> bytes:
        data = await self.stored_frame(source, number)
        return await self._encode(source, transcoder, number, data)

    async def _encode(
        self, source: PixelSource, transcoder: Transcoder, number: int, data: bytes
    ) -> bytes:
        try:
            return await self._guarded(source, lambda: transcoder.encode_frame(data))
        except CodecError as exc:
            raise Unsupported(
                f"frame {number} of instance {source.instance.sop_instance_uid} cannot be "
                f"converted to {transcoder.target_syntax}: {exc}"
            ) from exc

    async def transcoded(
        self, source: PixelSource, transcoder: Transcoder
    ) -> tuple[AsyncIterator[bytes], int]:
        """The instance as a PS3.10 file in the transcoder's syntax, and its size.

        The file is produced whole (a frame at a time, into a spooled temporary file:
        memory stays bounded) before this returns: damage that only a full decode finds
        (a frame a codec rejects) is then an error before the caller sends any byte, never
        a body cut short. The stream closes the spool when it ends or is dropped."""
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115
        try:
            async for chunk in self._transcoded_body(source, transcoder):
                if len(chunk) >= _SMALL_CHUNK:  # may go to disk: written in a thread
                    await asyncio.to_thread(spool.write, chunk)
                else:
                    spool.write(chunk)
            size = spool.tell()
            spool.seek(0)
        except BaseException as exc:
            spool.close()
            if isinstance(exc, _EXPECTED) or not isinstance(exc, Exception):
                raise
            # The transcoder's header work (prefix, suffix) on values damaged in storage.
            log.warning(
                "instance %s: transcoding failed on damaged data (%s)",
                source.instance.sop_instance_uid,
                type(exc).__name__,
            )
            raise Unsupported(
                f"instance {source.instance.sop_instance_uid} cannot be transcoded: its stored "
                f"data is damaged ({type(exc).__name__})"
            ) from exc
        return _read_spool(spool), size

    async def _transcoded_body(
        self, source: PixelSource, transcoder: Transcoder
    ) -> AsyncIterator[bytes]:
        native = source.has_pixels and not transcoder.encapsulated
        frame_length = transcoder.native_frame_length() if native else None
        prefix = transcoder.prefix(source.frame_count, frame_length)
        if not source.has_pixels:
            yield prefix
        # The next frame is read while this one is encoded.
        pending: asyncio.Future[bytes] | None = None
        try:
            for number in range(1, source.frame_count + 1):
                data = await (pending or self.stored_frame(source, number))
                pending = None
                if number < source.frame_count:
                    pending = asyncio.ensure_future(self.stored_frame(source, number + 1))
                item = transcoder.frame_item(await self._encode(source, transcoder, number, data))
                yield prefix + item if number == 1 else item
        finally:
            if pending is not None:
                pending.cancel()
        yield transcoder.suffix()

    async def rendered(
        self, source: PixelSource, numbers: Sequence[int], options: RenderOptions
    ) -> bytes:
        """The frames (from 1) rendered as one image (several: an animated GIF)."""
        self.check_frames(source, numbers)
        if source.path is not None:
            # A stored file on this machine: read, decoded and rendered in one worker job
            # (a thread hop per step cost more than a CT slice's pixel work).
            def work() -> bytes:
                frames = [_decode(source, n, source.local_frame(n)) for n in numbers]
                return _render(source, frames, options, numbers)

            return await self._guarded(source, work)
        frames = [await self.decoded_frame(source, n) for n in numbers]
        return await self._guarded(source, lambda: _render(source, frames, options, numbers))

    async def cached_thumbnail(
        self,
        access: Access,
        instance: StoredInstance,
        options: RenderOptions,
        size: int,
        frame: int | None = None,
    ) -> bytes:
        """A thumbnail of `instance`, found with `access`, fitting in size x size: frame
        `frame` rendered with `options` (their viewport replaced, no annotation), or without
        a frame the middle frame in `options.media_type`. Served from the thumbnail cache when
        this very stored object was drawn so before (see ThumbnailCache for why the key
        cannot go stale)."""
        access.require(Permission.READ)
        if frame is None:
            shape: object = (options.media_type, size)
        else:
            options = replace(options, viewport=Viewport(size, size), annotation=frozenset())
            shape = options
        key = (access.tenant, instance.blob_key, instance.sha256, frame, shape)
        cached = self.thumbnails.get(key)
        if cached is not None:
            return cached
        source = await self.open(access, instance, check_values=False)
        if frame is None:
            data = await self.thumbnail(source, options.media_type, size)
        else:
            self.check_frames(source, [frame])
            data = await self.rendered(source, [frame], options)
        self.thumbnails.put(key, data)
        return data

    async def thumbnail(self, source: PixelSource, media_type: str, size: int) -> bytes:
        """A small image of the instance's middle frame."""
        number = (source.frame_count + 1) // 2 if source.has_pixels else 1
        self.check_frames(source, [number])
        if source.path is not None:  # one worker job, as in `rendered`

            def work() -> bytes:
                frame = _decode(source, number, source.local_frame(number))
                return _thumbnail(source, frame, media_type, size)

            return await self._guarded(source, work)
        frame = await self.decoded_frame(source, number)
        return await self._guarded(source, lambda: _thumbnail(source, frame, media_type, size))
