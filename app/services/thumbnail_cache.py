"""Encoded thumbnails kept in memory: viewers (OHIF's study list and series panel) ask for the
same study, series and instance thumbnails over and over.

Entries are keyed by what the image is made of, never by the URL: the tenant, the blob key of
the representative instance (a fresh id for every stored object, so an overwritten or deleted
and re-stored instance has another key) and its SHA-256, the frame, and the options that shape
the output. The caller finds the representative from the current instance list first, with the
request's access checked: an instance added to a series moves the middle image and so the key,
a deleted one is no longer found, and another tenant's entry cannot be reached. Nothing can be
served stale, so nothing needs invalidating; old entries age out, least recently used first,
within a byte budget (PACS_THUMBNAIL_CACHE_BYTES).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class ThumbnailCache:
    """A least-recently-used map of keys to encoded images, bounded in bytes. Used from the
    event loop only (no locking)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes  # 0: nothing is kept
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()
        self._bytes = 0

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> bytes | None:
        data = self._entries.get(key)
        if data is not None:
            self._entries.move_to_end(key)
        return data

    def put(self, key: Hashable, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return  # would evict everything else and still not fit
        previous = self._entries.pop(key, None)
        if previous is not None:
            self._bytes -= len(previous)
        self._entries[key] = data
        self._bytes += len(data)
        while self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= len(evicted)
