"""Delete a study, series or instance (issue 12, Delete): `DELETE` on DICOMweb, permission
`delete`.

The index removes the rows, recomputes what remains (counts, ModalitiesInStudy), writes
the change-log entries and the audit events, and records each blob to delete, all in one
transaction (`Index.delete`): no reader ever sees part of a delete, and DICOMweb and DIMSE,
which both ask the index, agree from the commit on. The blobs are deleted after the commit
(a blob cannot be deleted in a transaction; deleting it first would leave rows naming a
missing blob if the commit failed), then their records. A deletion that fails (the store
down, refusing) keeps its record, and `retry_periodically` tries again on any node until
the blob is gone: never leaked. Meanwhile the orphan sweep sees the record
(`Index.referenced_blob_keys`) and leaves the blob to us rather than quarantining it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

from app.audit.event import AuditEvent, EventActionCode, EventOutcome
from app.auth.principal import Access, Permission
from app.services.audit import AuditService, per_study
from app.services.errors import NotFound
from app.services.ports import BlobStore, DeleteResult, Index

log = logging.getLogger(__name__)

# Blobs deleted at once: a study of thousands of S3 objects is not deleted one by one.
CONCURRENCY = 16
# Blob-deletion records read per retry round.
PAGE_SIZE = 1000


def _describe(study: str, series: str | None, sop: str | None) -> str:
    if sop is not None:
        return f"instance {sop} in series {series} of study {study}"
    if series is not None:
        return f"series {series} in study {study}"
    return f"study {study}"


class DeleteService:
    def __init__(
        self,
        index: Index,
        blobs: BlobStore,
        audit: AuditService,
        *,
        changed: Callable[[str], None] | None = None,
    ) -> None:
        self.index = index
        self.blobs = blobs
        self.audit = audit
        # Wakes this process's change-feed readers (app/services/changefeed.py).
        self.changed = changed

    async def delete(
        self,
        access: Access,
        study: str,
        series: str | None = None,
        sop: str | None = None,
        *,
        event: AuditEvent,
    ) -> DeleteResult:
        """Delete what the UIDs name in the caller's tenant; NotFound if nothing is stored
        there (a second delete of the same thing). `event` is the caller's template of the
        audit events (one per study, kept in the delete's transaction)."""
        access.require(Permission.DELETE)
        template = replace(event, action_code=EventActionCode.DELETE)
        result = await self.index.delete(
            access.tenant, study, series, sop, audit=partial(per_study, template)
        )
        if not result.instances:
            message = f"no {_describe(study, series, sop)} is stored"
            self.audit.record(
                replace(
                    template,
                    outcome=EventOutcome.MINOR_FAILURE,
                    reason=message,
                    study_instance_uid=study,
                )
            )
            raise NotFound(message)
        for kept in result.audit:
            self.audit.forward(kept)
        if self.changed is not None:
            self.changed(access.tenant)
        await delete_blobs(self.index, self.blobs, [i.blob_key for i in result.instances])
        return result


async def delete_blobs(index: Index, blobs: BlobStore, keys: Sequence[str]) -> int:
    """Delete the blobs of `keys` (each recorded by `Index.delete`) and then the records of
    those that went; the number that failed, left recorded for the retry."""
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(key: str) -> bool:
        async with limit:
            try:
                await blobs.delete(key)
            except Exception as exc:  # the store's: retried later, never lost
                # The key and the error's type only: no patient data in the log.
                log.warning(
                    "deleting blob %s failed (%s); it stays recorded and is retried",
                    key,
                    type(exc).__name__,
                )
                return False
            return True

    done = await asyncio.gather(*(one(key) for key in keys))
    deleted = [key for key, ok in zip(keys, done, strict=True) if ok]
    try:
        await index.blobs_deleted(deleted)
    except Exception as exc:  # the blobs are gone; the retry deletes them again, harmlessly
        log.warning("forgetting %d deleted blobs failed (%s)", len(deleted), type(exc).__name__)
    return len(keys) - len(deleted)


@dataclass
class RetryResult:
    deleted: int = 0
    failed: int = 0


async def retry_blob_deletions(
    index: Index, blobs: BlobStore, *, page_size: int = PAGE_SIZE
) -> RetryResult:
    """Delete every blob still recorded for deletion, a page at a time; stop at the first
    page with a failure (the store is likely still down: the next round tries again)."""
    result = RetryResult()
    while keys := await index.blobs_to_delete(page_size):
        failed = await delete_blobs(index, blobs, keys)
        result.deleted += len(keys) - failed
        result.failed += failed
        if failed or len(keys) < page_size:
            break
    return result


async def retry_periodically(index: Index, blobs: BlobStore, *, interval: float) -> None:
    """Retry failed blob deletions every `interval` seconds, until cancelled. A failed
    round is logged and tried again: it never stops the server."""
    while True:
        try:
            result = await retry_blob_deletions(index, blobs)
        except Exception as exc:  # the index's: the next round tries again
            log.warning("blob deletion retry failed: %s", type(exc).__name__)
        else:
            if result.deleted or result.failed:
                log.info(
                    "blob deletion retry: %d deleted, %d still failing",
                    result.deleted,
                    result.failed,
                )
        await asyncio.sleep(interval)
