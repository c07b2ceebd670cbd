"""One local file per instance, in a transfer syntax the receiver accepts: what C-MOVE and
C-GET send (pynetdicom sends a file from disk in chunks, its dataset bytes as they are).

The stored syntax when the receiver accepts it: the folder store's own file, or a copy of
an S3 object in the spool folder (checked against the SHA-256 recorded at ingest on the
way). Otherwise the instance is transcoded, as WADO-RS does for an Accept header, into the
first accepted syntax the plan (plan.py `peer_targets`) can produce.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from app.auth.principal import Access, Permission
from app.services.errors import StorageInconsistent
from app.services.plan import Planner
from app.services.ports import StoredInstance
from app.services.retrieve import missing_from_storage


@dataclass(frozen=True)
class LocalFile:
    """A PS3.10 file to send; `discard()` once sent (removes it if it is a copy)."""

    path: Path
    transfer_syntax_uid: str
    temporary: bool

    def discard(self) -> None:
        if self.temporary:
            self.path.unlink(missing_ok=True)


class Delivery:
    def __init__(self, plan: Planner, spool: Path) -> None:
        self.plan = plan
        self.retrieve = plan.retrieve
        self.imaging = plan.imaging
        self.spool = spool

    async def local_file(
        self, access: Access, instance: StoredInstance, accepted: Sequence[str]
    ) -> LocalFile:
        """`instance` (found with `access`) as a local file in one of the `accepted`
        transfer syntaxes. NotAcceptable when none can be produced; StorageInconsistent
        when the stored file is missing or damaged."""
        access.require(Permission.READ)
        plan = await self.plan.for_peer(access, instance, accepted)
        if plan.source is None or plan.transcoder is None:
            return self.stored_file(access, instance) or await self._copy(instance)
        body, _ = await self.imaging.transcoded(plan.source, plan.transcoder)
        return LocalFile(await self._write(body), plan.rep.transfer_syntax, temporary=True)

    def stored_file(self, access: Access, instance: StoredInstance) -> LocalFile | None:
        """The stored file itself when the blob store keeps it on this machine, else None
        (then `local_file` copies it). Blocking but short (a stat): callable from any
        thread, so that a sender thread need not wait for the event loop per instance."""
        access.require(Permission.READ)
        path = self.retrieve.blobs.local_path(instance.blob_key)
        if path is None:
            return None
        if not path.is_file():
            raise missing_from_storage(instance)
        return LocalFile(path, instance.transfer_syntax_uid, temporary=False)

    async def _copy(self, instance: StoredInstance) -> LocalFile:
        digest = hashlib.sha256()
        copy = await self._write(self.retrieve.content(instance), digest)
        if digest.hexdigest() != instance.sha256:
            copy.unlink(missing_ok=True)
            raise StorageInconsistent(
                f"the stored file of instance {instance.sop_instance_uid} does not match its "
                "checksum; the archive needs a consistency check"
            )
        return LocalFile(copy, instance.transfer_syntax_uid, temporary=True)

    async def _write(
        self, chunks: AsyncIterator[bytes], digest: hashlib._Hash | None = None
    ) -> Path:
        """`chunks` in a new file of the spool folder (removed again if they fail)."""
        path = self.spool / f"{uuid.uuid4().hex}.send.part"
        handle: BinaryIO = await asyncio.to_thread(path.open, "wb")
        try:
            async for chunk in chunks:
                if digest is not None:
                    digest.update(chunk)
                await asyncio.to_thread(handle.write, chunk)
        except BaseException:
            handle.close()
            path.unlink(missing_ok=True)
            raise
        handle.close()
        return path
