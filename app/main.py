"""Composition root: settings -> backends -> services -> protocol servers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.types import ASGIApp

from app.index.sqlite import SqliteIndex
from app.services.archive import Archive
from app.services.ports import BlobStore, Index
from app.settings import Settings
from app.storage.filesystem import FolderBlobStore
from app.web.app import create_app

log = logging.getLogger("pacs")


class ConfigurationError(RuntimeError):
    pass


async def open_index(settings: Settings) -> Index:
    if settings.uses_postgres:
        raise ConfigurationError("the PostgreSQL index is not available in this version")
    if settings.database_url and not settings.database_url.startswith("sqlite:///"):
        raise ConfigurationError(
            f"unsupported database URL {settings.database_url!r}: "
            "use sqlite:///path or postgresql://..."
        )
    return await SqliteIndex.open(settings.sqlite_path)


def open_blobs(settings: Settings) -> BlobStore:
    if settings.uses_s3:
        raise ConfigurationError("S3 storage is not available in this version")
    if "://" in settings.storage_url and not settings.storage_url.startswith("file://"):
        raise ConfigurationError(
            f"unsupported storage URL {settings.storage_url!r}: use a folder, file:///path "
            "or s3://bucket/prefix"
        )
    return FolderBlobStore(settings.blob_root)


@asynccontextmanager
async def open_archive(settings: Settings) -> AsyncIterator[Archive]:
    index = await open_index(settings)
    try:
        blobs = open_blobs(settings)
    except BaseException:
        await index.close()
        raise
    archive = Archive.build(settings, index, blobs)
    if stale := archive.store.discard_stale_spool():
        log.warning("removed %d unfinished uploads left in %s", stale, settings.spool_dir)
    log.info("index: SQLite at %s", settings.sqlite_path.resolve())
    log.info("blobs: folder %s", settings.blob_root.resolve())
    try:
        yield archive
    finally:
        await archive.close()


def build_app(settings: Settings) -> ASGIApp:
    return create_app(lambda: open_archive(settings), cors_origins=settings.cors_origins)
