"""The orphan sweep: blobs no index row refers to, left by a process that stopped between
storing a blob and committing its row (kill -9, power cut), are moved to the quarantine.

The store service puts a blob first and indexes it after (app/services/store.py), so on any
node a blob exists for a moment without its row. Telling that moment from a leftover
needs no write on the ingest path: a blob older than `grace` seconds (by the store's own
clock) that no row names is a leftover, provided `grace` exceeds the longest time between
a blob's write and its commit on any node sharing the index (checked against the index
after the store was listed, so a row committed meanwhile keeps its blob). An in-flight
record per instance in the index would say the same exactly, at the price of an index
write per instance on the ingest path; a grace measured in minutes costs nothing there.

Quarantine rather than deletion: the sweep judges by absence, and absence also follows
from a mistake (a store shared with another archive's database, an index restored from an
older backup). A quarantined blob can be put back; a deleted one cannot. Each is logged
with its key and size only (no patient data: the blob is not opened).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from app.services.ports import BlobStore, Index

log = logging.getLogger(__name__)

PAGE_SIZE = 1000


@dataclass
class SweepResult:
    blobs: int = 0  # listed
    quarantined: int = 0
    quarantined_bytes: int = 0
    young: int = 0  # without a row but younger than the grace: kept (maybe in flight)


async def sweep_orphans(
    index: Index, blobs: BlobStore, *, grace: float, page_size: int = PAGE_SIZE
) -> SweepResult:
    """Quarantine every blob older than `grace` seconds that no instance row refers to.

    The store is listed a page at a time and each page is looked up in the index in one
    query, so memory and query size stay bounded whatever the number of blobs."""
    result = SweepResult()
    async for page in blobs.list_blobs(page_size):
        result.blobs += len(page)
        known = await index.referenced_blob_keys([blob.key for blob in page])
        for blob in page:
            if blob.key in known:
                continue
            if blob.age < grace:
                result.young += 1
                continue
            await blobs.quarantine(blob.key)
            result.quarantined += 1
            result.quarantined_bytes += blob.size
            log.warning(
                "quarantined blob %s (%d bytes, written %.0f s ago): no instance refers to it",
                blob.key,
                blob.size,
                blob.age,
            )
    return result


async def sweep_periodically(
    index: Index, blobs: BlobStore, *, grace: float, interval: float
) -> None:
    """Sweep now, then every `interval` seconds (0: only now), until cancelled. A failed
    sweep is logged and tried again at the next interval: it never stops the server."""
    while True:
        try:
            result = await sweep_orphans(index, blobs, grace=grace)
        except Exception as exc:  # the store's or the index's: the next run tries again
            log.error("orphan sweep failed: %s: %s", type(exc).__name__, exc)
        else:
            log.info(
                "orphan sweep: %d blobs, %d quarantined (%d bytes), %d without a row kept "
                "as younger than %g s",
                result.blobs,
                result.quarantined,
                result.quarantined_bytes,
                result.young,
                grace,
            )
        if interval <= 0:
            return
        await asyncio.sleep(interval)
