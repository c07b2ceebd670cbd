"""Which files and folders os.fsync was called on, for durability tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


class Synced:
    """Records the (device, inode) of every descriptor synced while installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.identities: set[tuple[int, int]] = set()
        real_fsync = os.fsync

        def recording(fd: int) -> None:
            stat = os.fstat(fd)
            self.identities.add((stat.st_dev, stat.st_ino))
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", recording)

    def __contains__(self, path: object) -> bool:
        assert isinstance(path, Path)
        stat = path.stat()
        return (stat.st_dev, stat.st_ino) in self.identities
