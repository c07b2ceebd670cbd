"""Pixel work for retrieval: transcoding, decoding and rendering, one frame at a time.

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
import os
import warnings
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
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
from app.imaging.display import RenderError
from app.imaging.render import RenderOptions, ViewportError, render, thumbnail
from app.imaging.transcode import NotTranscodable, Transcoder
from app.services.errors import BadRequest, NotAcceptable, NotFound, Unsupported
from app.services.ports import StoredInstance
from app.services.retrieve import RetrieveService, Swap

# Objects whose frames were not indexed are read whole to get at their pixels; beyond this
# size the request is refused (501) rather than risk the server's memory.
WHOLE_FILE_LIMIT = 256 * 1024 * 1024


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

    @property
    def has_pixels(self) -> bool:
        return self.frame_count > 0

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


def _read_dataset(data: bytes, stop_before_pixels: bool) -> Dataset:
    with warnings.catch_warnings():
        # Ingest already accepted the file; pydicom's remarks on odd values are not news here.
        warnings.simplefilter("ignore")
        return dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels, force=True)


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


class ImagingService:
    def __init__(self, retrieve: RetrieveService, workers: int | None = None) -> None:
        self.retrieve = retrieve
        self._cpu = asyncio.Semaphore(workers or os.cpu_count() or 2)

    async def _in_worker(self, work: Callable[[], T]) -> T:
        def run() -> T:
            try:
                return work()
            except StopIteration as exc:
                # A StopIteration cannot cross into the awaiting coroutine: the request
                # would hang. It is a bug wherever it comes from; make it an ordinary one.
                raise RuntimeError("StopIteration escaped from pixel work") from exc

        async with self._cpu:
            return await asyncio.to_thread(run)

    async def open(self, access: Access, instance: StoredInstance) -> PixelSource:
        """Read the header of `instance`, found with `access` (and, when its frames are not
        indexed, all of it)."""
        access.require(Permission.READ)
        pixel = instance.pixel_data
        if pixel is not None and instance.frames:
            data = await self.retrieve.read_bytes(instance, 0, pixel.offset)
            header = await self._in_worker(lambda: _read_dataset(data, True))
            swap = await self.retrieve.pixel_swap(access, instance)
            return PixelSource(instance, header, len(instance.frames), swap)
        if instance.size > WHOLE_FILE_LIMIT:
            raise Unsupported(
                f"instance {instance.sop_instance_uid} has no indexed frames and is larger "
                f"than {WHOLE_FILE_LIMIT // 2**20} MiB; its pixel data cannot be processed"
            )
        data = await self.retrieve.read_bytes(instance, 0, None)
        try:
            whole = await self._in_worker(lambda: _read_dataset(data, False))
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

    def check_frames(self, source: PixelSource, numbers: Sequence[int]) -> None:
        if not source.has_pixels:
            raise Unsupported(f"instance {source.instance.sop_instance_uid} has no pixel data")
        missing = [n for n in numbers if not 1 <= n <= source.frame_count]
        if missing:
            raise NotFound(
                f"frame {missing[0]} does not exist: instance "
                f"{source.instance.sop_instance_uid} has {source.frame_count} frame(s)"
            )

    async def stored_frame(self, source: PixelSource, number: int) -> bytes:
        """Frame `number` (from 1) as stored; native data little endian."""
        self.check_frames(source, [number])
        if source.loaded is not None:
            loaded = source.loaded
            return await self._in_worker(
                lambda: _loaded_frame(loaded, number - 1, source.frame_count)
            )
        ranges = source.instance.frames[number - 1]
        reader = self.retrieve.read_ranges(source.instance, ranges, source.swap)
        return b"".join([chunk async for chunk in reader])

    async def decoded_frame(self, source: PixelSource, number: int) -> Frame:
        data = await self.stored_frame(source, number)
        try:
            return await self._in_worker(
                lambda: decode_frame(source.header, source.transfer_syntax_uid, data)
            )
        except CodecError as exc:
            raise Unsupported(
                f"frame {number} of instance {source.instance.sop_instance_uid} cannot be "
                f"decoded: {exc}"
            ) from exc

    def transcoder(self, source: PixelSource, target: str) -> Transcoder:
        """A transcoder to `target`; NotAcceptable (406) when the conversion cannot be done."""
        try:
            return Transcoder(source.header, source.transfer_syntax_uid, target)
        except NotTranscodable as exc:
            raise NotAcceptable(
                f"instance {source.instance.sop_instance_uid} cannot be sent in transfer "
                f"syntax {target}: {exc}"
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
            return await self._in_worker(lambda: transcoder.encode_frame(data))
        except CodecError as exc:
            raise Unsupported(
                f"frame {number} of instance {source.instance.sop_instance_uid} cannot be "
                f"converted to {transcoder.target_syntax}: {exc}"
            ) from exc

    def transcoded(
        self, source: PixelSource, transcoder: Transcoder
    ) -> tuple[AsyncIterator[bytes], int | None]:
        """The instance as a PS3.10 file in the transcoder's syntax, a frame at a time, and
        its size when that is known before encoding (native targets)."""
        native = source.has_pixels and not transcoder.encapsulated
        frame_length = transcoder.native_frame_length() if native else None
        prefix = transcoder.prefix(source.frame_count, frame_length)
        size = None
        if not transcoder.encapsulated:
            frames = (frame_length or 0) * source.frame_count
            size = len(prefix) + frames + len(transcoder.suffix())
        return self._transcoded_body(source, transcoder, prefix), size

    async def _transcoded_body(
        self, source: PixelSource, transcoder: Transcoder, prefix: bytes
    ) -> AsyncIterator[bytes]:
        if not source.has_pixels:
            yield prefix
        # The first frame is encoded before anything is sent, so that an object the codecs
        # cannot handle gets an error response rather than a body cut off after its headers.
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
        frames = [await self.decoded_frame(source, n) for n in numbers]
        pairs = [(f.pixels, f.photometric_interpretation) for f in frames]
        indexes = [n - 1 for n in numbers]
        try:
            return await self._in_worker(
                lambda: render(source.display_header, pairs, options, indexes)
            )
        except ViewportError as exc:
            raise BadRequest(str(exc)) from exc
        except RenderError as exc:
            raise Unsupported(
                f"instance {source.instance.sop_instance_uid} cannot be rendered: {exc}"
            ) from exc

    async def thumbnail(self, source: PixelSource, media_type: str, size: int) -> bytes:
        """A small image of the instance's middle frame."""
        number = (source.frame_count + 1) // 2 if source.has_pixels else 1
        self.check_frames(source, [number])
        frame = await self.decoded_frame(source, number)
        try:
            return await self._in_worker(
                lambda: thumbnail(
                    source.display_header,
                    frame.pixels,
                    frame.photometric_interpretation,
                    media_type,
                    size,
                )
            )
        except RenderError as exc:
            raise Unsupported(
                f"instance {source.instance.sop_instance_uid} cannot be rendered: {exc}"
            ) from exc
