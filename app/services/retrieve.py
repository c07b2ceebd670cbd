"""Retrieve use case: find what a WADO (or later C-MOVE/C-GET) request names and stream it.

Everything comes from what ingest recorded: the blob key, frame byte ranges and bulk data
ranges. No file is parsed again to answer a request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from app.dicom.instance import BulkRange, FrameRanges
from app.services.errors import NotFound, Unsupported
from app.services.ports import BlobStore, Index, StoredInstance, StoredMetadata


def _describe(study: str, series: str | None, sop: str | None) -> str:
    if sop is not None:
        return f"instance {sop} in series {series} of study {study}"
    if series is not None:
        return f"series {series} in study {study}"
    return f"study {study}"


class RetrieveService:
    def __init__(self, index: Index, blobs: BlobStore) -> None:
        self.index = index
        self.blobs = blobs

    async def instances(
        self, study: str, series: str | None = None, sop: str | None = None
    ) -> list[StoredInstance]:
        found = await self.index.instances(study, series, sop)
        if not found:
            raise NotFound(f"no {_describe(study, series, sop)} is stored")
        return found

    async def metadata(
        self, study: str, series: str | None = None, sop: str | None = None
    ) -> list[StoredMetadata]:
        found = await self.index.metadata(study, series, sop)
        if not found:
            raise NotFound(f"no {_describe(study, series, sop)} is stored")
        return found

    def content(self, instance: StoredInstance) -> AsyncIterator[bytes]:
        """The stored Part 10 file, byte for byte."""
        return self.blobs.read(instance.blob_key)

    def frame_ranges(self, instance: StoredInstance, numbers: Sequence[int]) -> list[FrameRanges]:
        count = len(instance.frames)
        if count == 0:
            raise Unsupported(
                f"instance {instance.sop_instance_uid} has no indexed frames "
                "(no pixel data, or a layout frames cannot be served from)"
            )
        missing = [n for n in numbers if not 1 <= n <= count]
        if missing:
            raise NotFound(
                f"frame {missing[0]} does not exist: instance {instance.sop_instance_uid} "
                f"has {count} frame{'s' if count != 1 else ''}"
            )
        return [instance.frames[n - 1] for n in numbers]

    async def read_ranges(
        self, instance: StoredInstance, ranges: FrameRanges
    ) -> AsyncIterator[bytes]:
        for offset, length in ranges:
            async for chunk in self.blobs.read(instance.blob_key, offset, length):
                yield chunk

    def bulk_range(self, instance: StoredInstance, path: str) -> BulkRange:
        found = instance.bulk.get(path)
        if found is None:
            raise NotFound(f"instance {instance.sop_instance_uid} has no bulk data at {path}")
        return found
