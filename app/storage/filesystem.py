"""Blob store in a local folder: files are renamed into place, never half-written."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from itertools import islice
from pathlib import Path

from app.services.ports import BlobInfo
from app.storage.keys import QUARANTINE, key_of, key_path

CHUNK_SIZE = 1024 * 1024
# Threads syncing folders at once (a blob has up to four to sync: its own and new parents).
SYNC_THREADS = 8


class FolderBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        # Folders synced beside the blob itself (see _put); threads start when first used.
        self._syncs = ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="blob-sync")

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key_path(key))

    async def put(self, key: str, source: Path) -> None:
        await asyncio.to_thread(self._put, key, source)

    def _put(self, key: str, source: Path) -> None:
        """Rename the file into place, then sync it and the folders whose entries
        changed (a rename is durable only once its folder is, a new folder once its
        parent is): when this returns the blob survives a power cut, and only then may
        the caller index and acknowledge it. Syncing after the rename costs less than
        before it: on ext4 the file's sync commits the journal holding the rename too, so
        the folders' syncs find little left to do (same Linux, measured with 8 STOWs in
        flight: a sync before the rename plus the folders' took some 15% of throughput).

        The syncs are independent (each must be done before the blob is acknowledged, in
        no order among themselves), so the folders are synced on other threads while this
        one syncs the file: on ext4 they wait for the same journal commit, and a blob that
        created its folders costs about one sync's time instead of three in a row (a
        modality on one association waits that long for every instance)."""
        target = self._path(key)
        created = _make_folders(target.parent)
        try:
            os.replace(source, target)  # atomic on the same file system
        except OSError:
            # Another file system: copy to a temporary name, then rename into place.
            tmp = target.with_name(target.name + ".part")
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
            source.unlink()
        folders = [target.parent, *(made.parent for made in created)]
        beside = [self._syncs.submit(_sync, folder) for folder in folders]
        try:
            _sync(target)
        finally:
            wait(beside)
        for done in beside:
            done.result()  # raises a folder's failure

    async def read(
        self, key: str, start: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        path = self._path(key)
        handle = await asyncio.to_thread(path.open, "rb")
        try:
            if start:
                handle.seek(start)
            remaining = length
            while remaining is None or remaining > 0:
                size = CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining)
                # Small reads (frames of a few KB) are cheaper inline than in a thread.
                if size <= 65536:
                    chunk = handle.read(size)
                else:
                    chunk = await asyncio.to_thread(handle.read, size)
                if not chunk:
                    if remaining is not None:
                        raise OSError(f"blob {key} is shorter than expected")
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            handle.close()

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, True)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).exists)

    async def list_blobs(self, page_size: int = 1000) -> AsyncIterator[list[BlobInfo]]:
        walk = self._walk()
        while page := await asyncio.to_thread(lambda: list(islice(walk, page_size))):
            yield page

    def _walk(self) -> Iterator[BlobInfo]:
        """Blobs under the root, found by their layout (tenant/aa/bb/id or aa/bb/id);
        anything else (the quarantine, a copy's `.part` file) is not a blob."""
        for path in _files(self.root, self.root / QUARANTINE):
            parts = path.relative_to(self.root).parts
            if (key := key_of(parts)) is None:
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:  # deleted since it was listed
                continue
            yield BlobInfo(key, stat.st_size, time.time() - stat.st_mtime)

    async def quarantine(self, key: str) -> None:
        await asyncio.to_thread(self._quarantine, key)

    def _quarantine(self, key: str) -> None:
        source = self._path(key)
        target = self.root.joinpath(QUARANTINE, *key_path(key))
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(source, target)  # the same file system: a rename, nothing copied
        except FileNotFoundError:
            return

    async def close(self) -> None:
        self._syncs.shutdown(wait=False)


def _make_folders(folder: Path) -> list[Path]:
    """Create `folder` and any missing parents; the folders created, deepest last."""
    missing: list[Path] = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        made.mkdir(exist_ok=True)  # another writer may create it meanwhile
    return missing[::-1]


def _sync(path: Path) -> None:
    """fsync a file or a folder (opened read-only, as Linux allows for both)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _files(folder: Path, skip: Path) -> Iterator[Path]:
    """Files below `folder`, depth first: in memory, one directory listing per level (the
    layout is at most four deep), never the whole tree."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except FileNotFoundError:
        return
    for entry in entries:
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            if path != skip:
                yield from _files(path, skip)
        elif entry.is_file(follow_symlinks=False):
            yield path
