"""The archive's services bundled for the protocol layers."""

from __future__ import annotations

from dataclasses import dataclass

from app.services.imaging import ImagingService
from app.services.ports import BlobStore, Index
from app.services.retrieve import RetrieveService
from app.services.search import SearchService
from app.services.store import StoreService
from app.settings import Settings


@dataclass
class Archive:
    settings: Settings
    index: Index
    blobs: BlobStore
    store: StoreService
    search: SearchService
    retrieve: RetrieveService
    imaging: ImagingService

    @classmethod
    def build(cls, settings: Settings, index: Index, blobs: BlobStore) -> Archive:
        retrieve = RetrieveService(index, blobs)
        return cls(
            settings=settings,
            index=index,
            blobs=blobs,
            store=StoreService(index, blobs, settings.spool_dir, overwrite=settings.overwrite),
            search=SearchService(index),
            retrieve=retrieve,
            imaging=ImagingService(retrieve),
        )

    async def close(self) -> None:
        await self.index.close()
        await self.blobs.close()
