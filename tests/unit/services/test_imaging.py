"""Pixel work on a stored file this machine holds (read, decoded and rendered in one worker
job) against the same work through the blob store's ranged reads (an S3 object's path)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.auth.principal import Access, Permission, Principal
from app.services.errors import NotFound, StorageInconsistent
from app.services.imaging import ImagingService, RenderOptions, Viewport
from app.services.ports import StoredInstance
from app.storage.filesystem import FolderBlobStore
from tests.unit.services.stored import stored_instance

READER = Access(Principal("r", frozenset({Permission.READ}), None))


class RemoteBlobs(FolderBlobStore):
    """A folder store that says it keeps no local file, as the S3 store does."""

    def local_path(self, key: str) -> Path | None:
        return None


async def _both(tmp_path: Path) -> tuple[ImagingService, ImagingService, StoredInstance]:
    local, instance = await stored_instance(tmp_path)
    remote, _ = await stored_instance(tmp_path, blobs=RemoteBlobs(tmp_path / "blobs"))
    return ImagingService(local), ImagingService(remote), instance


@pytest.mark.parametrize(
    "options",
    [
        RenderOptions(media_type="image/jpeg"),
        RenderOptions(media_type="image/png", viewport=Viewport(8, 8)),
        RenderOptions(media_type="image/gif"),
    ],
)
async def test_a_local_file_renders_as_the_ranged_reads_do(
    tmp_path: Path, options: RenderOptions
) -> None:
    local, remote, instance = await _both(tmp_path)
    numbers = [1, 2] if options.media_type == "image/gif" else [2]
    source = await local.open(READER, instance, check_values=False)
    assert source.path is not None  # the one-job path
    by_ranges = await remote.open(READER, instance, check_values=False)
    assert by_ranges.path is None
    image = await local.rendered(source, numbers, options)
    assert image == await remote.rendered(by_ranges, numbers, options)
    thumbnail = await local.thumbnail(source, "image/jpeg", 8)
    assert thumbnail == await remote.thumbnail(by_ranges, "image/jpeg", 8)
    frame = await local.decoded_frame(source, 2)
    assert (frame.pixels == (await remote.decoded_frame(by_ranges, 2)).pixels).all()
    assert await local.stored_frame(source, 1) == await remote.stored_frame(by_ranges, 1)


@pytest.mark.parametrize("damage", ["removed", "truncated"])
async def test_a_local_file_gone_or_short_is_a_storage_inconsistency(
    tmp_path: Path, damage: str
) -> None:
    retrieve, instance = await stored_instance(tmp_path)
    imaging = ImagingService(retrieve)
    source = await imaging.open(READER, instance, check_values=False)
    path = retrieve.blobs.local_path(instance.blob_key)
    assert path is not None
    if damage == "removed":
        path.unlink()
    else:
        os.truncate(path, instance.frames[1][0][0] + 10)
    with pytest.raises(StorageInconsistent, match=instance.sop_instance_uid):
        await imaging.rendered(source, [2], RenderOptions(media_type="image/jpeg"))


@pytest.mark.parametrize(
    ("media_type", "numbers", "drawn"),
    [
        ("image/jpeg", None, 1),  # an instance renders as its first frame
        ("image/gif", None, 2),  # or, as a GIF, every frame
        ("image/png", [2], 1),
    ],
)
async def test_render_stored_in_one_job_as_in_steps(
    tmp_path: Path, media_type: str, numbers: list[int] | None, drawn: int
) -> None:
    local, remote, instance = await _both(tmp_path)
    options = RenderOptions(media_type=media_type)
    counted: list[int] = []
    image = await local.render_stored(READER, instance, options, numbers, counted.append)
    assert image == await remote.render_stored(READER, instance, options, numbers, counted.append)
    assert counted == [drawn, drawn]
    source = await remote.open(READER, instance)
    assert image == await remote.rendered(source, numbers or list(range(1, drawn + 1)), options)


async def test_render_stored_refuses_a_missing_frame_before_pixel_work(tmp_path: Path) -> None:
    local, _, instance = await _both(tmp_path)
    with pytest.raises(NotFound, match="frame 3 does not exist"):
        await local.render_stored(READER, instance, RenderOptions(media_type="image/png"), [3])
