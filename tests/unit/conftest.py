"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.index.sqlite import SqliteIndex


@pytest.fixture
async def index(tmp_path: Path) -> AsyncIterator[SqliteIndex]:
    """A new SQLite index in the test's folder (`index.sqlite`), closed afterwards."""
    opened = await SqliteIndex.open(tmp_path / "index.sqlite")
    try:
        yield opened
    finally:
        await opened.close()
