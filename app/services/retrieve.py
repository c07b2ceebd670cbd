"""Retrieve use case: find what a WADO, C-MOVE or C-GET request names and stream it.

Everything comes from what ingest recorded: the blob key, frame byte ranges and bulk data
ranges. No file is parsed again to answer a request.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import BinaryIO

import orjson

from app.auth.principal import Access, Permission
from app.dicom.byteorder import swap_width, swapped
from app.dicom.instance import BulkRange, FrameRanges
from app.dicom.json import first_value
from app.dicom.levels import UNIQUE_KEYS, Level
from app.dicom.tags import tag
from app.dicom.transfer_syntax import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
)
from app.query.model import Query
from app.services.errors import NotFound, StorageInconsistent, Unsupported
from app.services.ports import BlobStore, Index, StoredInstance, StoredMetadata

# (study, series, instance) UIDs of what a retrieve identifier matched; below the study
# level, None means all.
Scope = tuple[str, str | None, str | None]


@dataclass(frozen=True)
class Swap:
    """Byte swap for big-endian native data: value width and where the value starts."""

    width: int
    value_offset: int


def missing_from_storage(instance: StoredInstance) -> StorageInconsistent:
    """The error for a stored file found missing: the index and storage disagree."""
    return StorageInconsistent(
        f"the stored file of instance {instance.sop_instance_uid} is missing from "
        "storage; the archive needs a consistency check"
    )


def _describe(study: str, series: str | None, sop: str | None) -> str:
    if sop is not None:
        return f"instance {sop} in series {series} of study {study}"
    if series is not None:
        return f"series {series} in study {study}"
    return f"study {study}"


class RetrieveService:
    """Methods that name objects by UID take the caller's `Access`; methods given a
    `StoredInstance` read what such a call already allowed (its blob key is its tenant's)."""

    def __init__(self, index: Index, blobs: BlobStore) -> None:
        self.index = index
        self.blobs = blobs

    async def instances(
        self, access: Access, study: str, series: str | None = None, sop: str | None = None
    ) -> list[StoredInstance]:
        access.require(Permission.READ)
        found = await self.index.instances(access.tenant, study, series, sop)
        if not found:
            raise NotFound(f"no {_describe(study, series, sop)} is stored")
        return found

    async def instances_matching(
        self, access: Access, query: Query, page: int = 500
    ) -> list[StoredInstance]:
        """The instances of every patient, study, series or instance `query` matches, in
        retrieval order within each (C-MOVE and C-GET identifiers); empty if none.

        The matches are read a page at a time; a patient query becomes a query for the
        patient's studies (patient attributes are matched on the study rows too).
        """
        access.require(Permission.READ)
        level = Level.STUDY if query.level is Level.PATIENT else query.level
        search = replace(query, level=level, include=frozenset(), include_all=False, limit=page)
        found: list[StoredInstance] = []
        seen: set[Scope] = set()
        offset = 0
        while True:
            hits = await self.index.search(access.tenant, replace(search, offset=offset))
            scopes: list[Scope] = []
            for hit in hits:
                study = first_value(hit.study or {}, UNIQUE_KEYS[Level.STUDY])
                scope = (
                    study,
                    first_value(hit.series or {}, UNIQUE_KEYS[Level.SERIES]),
                    first_value(hit.instance or {}, UNIQUE_KEYS[Level.INSTANCE]),
                )
                if study is not None and scope not in seen:
                    seen.add(scope)
                    scopes.append(scope)
            found.extend(await self._instances_of(access.tenant, scopes))
            if len(hits) < page:
                return found
            offset += page

    async def _instances_of(self, tenant: str, scopes: list[Scope]) -> list[StoredInstance]:
        """The instances of each (study, series, instance) scope, in order. Instances named
        one by one (an IMAGE-level identifier with a UID list) are read a series at a time
        when several share one: one index query per series, not one per instance."""
        per_series: dict[tuple[str, str | None], int] = {}
        for study, series, sop in scopes:
            if sop is not None:
                per_series[study, series] = per_series.get((study, series), 0) + 1
        series_rows: dict[tuple[str, str | None], dict[str, StoredInstance]] = {}
        found: list[StoredInstance] = []
        for study, series, sop in scopes:
            if sop is None or per_series[study, series] == 1:
                found.extend(await self.index.instances(tenant, study, series, sop))
                continue
            rows = series_rows.get((study, series))
            if rows is None:
                listed = await self.index.instances(tenant, study, series)
                rows = series_rows[study, series] = {i.sop_instance_uid: i for i in listed}
            if sop in rows:
                found.append(rows[sop])
        return found

    async def metadata(
        self, access: Access, study: str, series: str | None = None, sop: str | None = None
    ) -> list[StoredMetadata]:
        access.require(Permission.READ)
        found = await self.index.metadata(access.tenant, study, series, sop)
        if not found:
            raise NotFound(f"no {_describe(study, series, sop)} is stored")
        return found

    async def content(self, instance: StoredInstance) -> AsyncIterator[bytes]:
        """The stored Part 10 file, byte for byte."""
        async for chunk in self._read(instance, 0, None):
            yield chunk

    def has_local_file(self, instance: StoredInstance) -> bool:
        """Whether the blob store keeps `instance` as a file on this machine
        (`open_stored`); the same answer for every instance of a store."""
        return self.blobs.local_path(instance.blob_key) is not None

    def open_stored(self, instance: StoredInstance) -> BinaryIO | None:
        """The stored file itself, open for reading, when the blob store keeps it on this
        machine (None: read it with `content`). Its size is checked against the size
        recorded at ingest: StorageInconsistent when the file is missing or its size
        differs. (Its SHA-256 is not: hashing every read would cost what sending it from
        the page cache saves.) Blocking but short (an open and a stat)."""
        path = self.blobs.local_path(instance.blob_key)
        if path is None:
            return None
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise missing_from_storage(instance) from None
        size = os.fstat(handle.fileno()).st_size
        if size != instance.size:
            handle.close()
            raise StorageInconsistent(
                f"the stored file of instance {instance.sop_instance_uid} has {size} bytes, "
                f"not the {instance.size} recorded when it was stored; the archive needs a "
                "consistency check"
            )
        return handle

    async def read_bytes(
        self, instance: StoredInstance, start: int = 0, length: int | None = None
    ) -> bytes:
        """Bytes [start, start + length) of the stored file, in memory: for headers and
        single frames, never for whole objects of unknown size."""
        return b"".join([chunk async for chunk in self._read(instance, start, length)])

    async def _read(
        self, instance: StoredInstance, start: int, length: int | None
    ) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.blobs.read(instance.blob_key, start, length):
                yield chunk
        except FileNotFoundError:
            raise missing_from_storage(instance) from None

    def frame_ranges(self, instance: StoredInstance, numbers: Sequence[int]) -> list[FrameRanges]:
        count = len(instance.frames)
        if count == 0:
            if instance.transfer_syntax_uid == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
                raise Unsupported(
                    f"frames of instance {instance.sop_instance_uid} cannot be served: it is "
                    "stored in the Deflated Explicit VR Little Endian transfer syntax; "
                    "retrieve the whole instance instead"
                )
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
        self, instance: StoredInstance, ranges: FrameRanges, swap: Swap | None = None
    ) -> AsyncIterator[bytes]:
        """Bytes of the ranges, byte-swapped to little endian when `swap` says so."""
        for offset, length in ranges:
            if swap is None or swap.width == 1:
                async for chunk in self._read(instance, offset, length):
                    yield chunk
                continue
            # Values are swapped whole: read from the value boundary before `offset` to the
            # one after the end, swap, then cut back to the range asked for.
            width = swap.width
            head = (offset - swap.value_offset) % width
            start = offset - head
            span = head + length
            span += -span % width
            swapped_chunks = swapped(self._read(instance, start, span), width)
            skip, left = head, length
            async for chunk in swapped_chunks:
                piece = chunk[skip:][:left]
                skip = max(0, skip - len(chunk))
                left -= len(piece)
                if piece:
                    yield piece

    async def pixel_swap(self, access: Access, instance: StoredInstance) -> Swap | None:
        """How to turn stored native pixel data little endian (None: nothing to do)."""
        if instance.encapsulated or instance.transfer_syntax_uid != EXPLICIT_VR_BIG_ENDIAN:
            return None
        pixel = instance.pixel_data
        if pixel is None:
            return None
        # Values are as wide as BitsAllocated; 8-bit data in OW is still swapped by word.
        access.require(Permission.READ)
        found = await self.index.metadata(
            access.tenant,
            instance.study_instance_uid,
            instance.series_instance_uid,
            instance.sop_instance_uid,
        )
        bits = first_value(orjson.loads(found[0].json), tag("BitsAllocated")) if found else None
        width = max(swap_width(pixel.vr), (int(bits) // 8) if bits else 1)
        return Swap(width, pixel.offset)

    def bulk_swap(self, instance: StoredInstance, found: BulkRange) -> Swap | None:
        if instance.transfer_syntax_uid != EXPLICIT_VR_BIG_ENDIAN:
            return None
        return Swap(swap_width(found.vr), found.offset)

    def bulk_range(self, instance: StoredInstance, path: str) -> BulkRange:
        found = instance.bulk.get(path)
        if found is None:
            raise NotFound(f"instance {instance.sop_instance_uid} has no bulk data at {path}")
        return found
