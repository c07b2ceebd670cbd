"""Blob store in a local folder: files are renamed into place, never half-written."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from app.storage.keys import key_path

CHUNK_SIZE = 1024 * 1024


class FolderBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key_path(key))

    async def put(self, key: str, source: Path) -> None:
        await asyncio.to_thread(self._put, key, source)

    def _put(self, key: str, source: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(source, target)  # atomic on the same file system
        except OSError:
            # Another file system: copy to a temporary name, then rename into place.
            tmp = target.with_name(target.name + ".part")
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
            source.unlink()

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

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, True)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).exists)

    async def close(self) -> None:
        return None
