"""One contract for every BlobStore: the folder store and the S3 store (moto on loopback)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import AioSession
from botocore.exceptions import ClientError, ResponseStreamingError

from app.services.ports import BlobInfo, BlobStore, blob_key
from app.storage import s3
from app.storage.filesystem import FolderBlobStore
from app.storage.s3 import S3BlobStore, StorageUnavailable
from tests.support.fsync import Synced
from tests.support.moto import (
    ACCESS_KEY_ID,
    REGION,
    SECRET_ACCESS_KEY,
    moto_available,
    running_moto,
)
from tests.support.server import free_port

MiB = 1024 * 1024
PART_SIZE = 5 * MiB  # S3's minimum, so a modest object already takes the multipart path


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not moto_available():
        if os.environ.get("CI") == "true":
            pytest.fail("moto[server] is required in CI for the S3 blob store tests")
        pytest.skip("moto[server] is not installed")
    with running_moto(tmp_path_factory.mktemp("moto")) as url:
        yield url


def credentials(endpoint: str) -> dict[str, Any]:
    return {
        "endpoint_url": endpoint,
        "region": REGION,
        "access_key_id": ACCESS_KEY_ID,
        "secret_access_key": SECRET_ACCESS_KEY,
    }


async def create_bucket(endpoint: str) -> str:
    bucket = f"blobs-{uuid.uuid4().hex[:12]}"
    async with AioSession().create_client(
        "s3",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    ) as client:
        await client.create_bucket(Bucket=bucket)
    return bucket


async def open_s3_store(endpoint: str) -> S3BlobStore:
    """A store on a fresh bucket, so tests never see each other's objects."""
    bucket = await create_bucket(endpoint)
    return await S3BlobStore.open(
        f"s3://{bucket}/archive", part_size=PART_SIZE, **credentials(endpoint)
    )


@pytest.fixture
async def s3_store(s3_endpoint: str) -> AsyncIterator[S3BlobStore]:
    store = await open_s3_store(s3_endpoint)
    yield store
    await store.close()


@pytest.fixture(params=["folder", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    # The S3 endpoint is looked up only here, so folder tests run without moto.
    blobs: BlobStore
    if request.param == "folder":
        blobs = FolderBlobStore(tmp_path / "blobs")
    else:
        blobs = await open_s3_store(request.getfixturevalue("s3_endpoint"))
    yield blobs
    await blobs.close()


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    folder = tmp_path / "spool"
    folder.mkdir()
    return folder


def key() -> str:
    return uuid.uuid4().hex


def write(folder: Path, data: bytes) -> Path:
    path = folder / f"{uuid.uuid4().hex}.part"
    path.write_bytes(data)
    return path


def write_random(folder: Path, size: int) -> tuple[Path, str]:
    """A file of `size` random bytes written 1 MiB at a time; returns it and its SHA-256."""
    path = folder / f"{uuid.uuid4().hex}.part"
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        for offset in range(0, size, MiB):
            chunk = os.urandom(min(MiB, size - offset))
            digest.update(chunk)
            handle.write(chunk)
    return path, digest.hexdigest()


async def read_all(store: BlobStore, name: str, start: int = 0, length: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in store.read(name, start, length)])


async def sha256_of(store: BlobStore, name: str) -> str:
    digest = hashlib.sha256()
    async for chunk in store.read(name):
        digest.update(chunk)
    return digest.hexdigest()


# --- the contract ------------------------------------------------------------------------

SIZE = 3 * MiB + 17  # crosses the 1 MiB read chunks, ends off a boundary


async def test_put_then_read_whole(store: BlobStore, spool: Path) -> None:
    data = os.urandom(SIZE)
    name = key()
    await store.put(name, write(spool, data))
    assert await read_all(store, name) == data


@pytest.mark.parametrize(
    ("start", "length"),
    [
        (0, 1),  # first byte
        (0, 1000),
        (0, None),  # whole blob
        (MiB - 1, 2),  # across a chunk boundary
        (SIZE // 2, 12345),  # middle
        (SIZE // 2, None),  # middle to end
        (SIZE - 1, 1),  # last byte
        (SIZE - 1, None),
        (SIZE - 10, 10),  # ends exactly at the end
        (0, SIZE),
        (123, 0),  # nothing
    ],
)
async def test_ranged_reads(store: BlobStore, spool: Path, start: int, length: int | None) -> None:
    data = os.urandom(SIZE)
    name = key()
    await store.put(name, write(spool, data))
    expected = data[start:] if length is None else data[start : start + length]
    assert await read_all(store, name, start, length) == expected


async def test_read_from_the_end_is_empty(store: BlobStore, spool: Path) -> None:
    name = key()
    await store.put(name, write(spool, b"0123456789"))
    assert await read_all(store, name, 10) == b""
    assert await read_all(store, name, 10, 0) == b""


@pytest.mark.parametrize(("start", "length"), [(5, 6), (10, 1), (20, 5)])
async def test_read_past_the_end_raises(
    store: BlobStore, spool: Path, start: int, length: int
) -> None:
    name = key()
    await store.put(name, write(spool, b"0123456789"))
    with pytest.raises(OSError, match="shorter than expected"):
        await read_all(store, name, start, length)


async def test_empty_blob(store: BlobStore, spool: Path) -> None:
    name = key()
    await store.put(name, write(spool, b""))
    assert await store.exists(name)
    assert await read_all(store, name) == b""
    assert await read_all(store, name, 0, 0) == b""


async def test_large_object_round_trips(store: BlobStore, spool: Path) -> None:
    # Above the part size: S3 takes the multipart path with a short last part.
    source, digest = write_random(spool, 12 * MiB + 345)
    name = key()
    await store.put(name, source)
    whole = await read_all(store, name)
    assert hashlib.sha256(whole).hexdigest() == digest
    # Ranges across the boundary between parts 1 and 2, and the short last part.
    assert await read_all(store, name, PART_SIZE - 3, 6) == whole[PART_SIZE - 3 : PART_SIZE + 3]
    assert await read_all(store, name, 2 * PART_SIZE + 1) == whole[2 * PART_SIZE + 1 :]


async def test_put_consumes_the_source(store: BlobStore, spool: Path) -> None:
    small = write(spool, b"small")
    large, _ = write_random(spool, PART_SIZE + 1)
    await store.put(key(), small)
    await store.put(key(), large)
    assert not any(spool.iterdir())  # noqa: ASYNC240


async def test_overwrite_replaces_the_blob(store: BlobStore, spool: Path) -> None:
    name = key()
    await store.put(name, write(spool, b"first version, longer"))
    await store.put(name, write(spool, b"second"))
    assert await read_all(store, name) == b"second"


async def test_exists_and_delete(store: BlobStore, spool: Path) -> None:
    name = key()
    assert not await store.exists(name)
    await store.put(name, write(spool, b"data"))
    assert await store.exists(name)
    await store.delete(name)
    assert not await store.exists(name)
    await store.delete(name)  # idempotent
    await store.delete(key())  # never existed


async def test_read_of_a_missing_blob_raises_file_not_found(store: BlobStore) -> None:
    with pytest.raises(FileNotFoundError):
        await read_all(store, key())
    with pytest.raises(FileNotFoundError):
        await read_all(store, key(), 10, 5)


@pytest.mark.parametrize(
    "bad", ["", "a/b/c", ".hidden", "../escape", "t/.hidden", "/x", "Tenant/x", "t x/y"]
)
async def test_invalid_keys_are_refused(store: BlobStore, spool: Path, bad: str) -> None:
    source = write(spool, b"x")
    with pytest.raises(ValueError, match="invalid blob key"):
        await store.put(bad, source)
    assert source.exists()
    with pytest.raises(ValueError, match="invalid blob key"):
        await read_all(store, bad)


async def test_abandoned_read_releases_its_stream(store: BlobStore, spool: Path) -> None:
    source, digest = write_random(spool, SIZE)
    name = key()
    await store.put(name, source)
    # Far more abandoned reads than the S3 connection pool holds: a leak would hang here.
    for _ in range(60):
        stream = store.read(name)
        assert await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined]
    assert await sha256_of(store, name) == digest


async def test_memory_stays_bounded_for_a_large_blob(store: BlobStore, spool: Path) -> None:
    size = 40 * MiB
    source, digest = write_random(spool, size)
    name = key()
    tracemalloc.start()
    try:
        await store.put(name, source)
        _, put_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        assert await sha256_of(store, name) == digest
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"peak traced memory: put {put_peak / MiB:.1f} MiB, read {read_peak / MiB:.1f} MiB")
    assert put_peak < 20 * MiB
    assert read_peak < 20 * MiB


async def test_concurrent_puts_and_reads(store: BlobStore, spool: Path) -> None:
    blobs = {key(): os.urandom(200_000 + i * 10_000) for i in range(20)}
    await asyncio.gather(*(store.put(name, write(spool, data)) for name, data in blobs.items()))
    names = list(blobs)
    results = await asyncio.gather(*(read_all(store, name) for name in names))
    assert results == [blobs[name] for name in names]
    ranged = await asyncio.gather(*(read_all(store, name, 1000, 5000) for name in names))
    assert ranged == [blobs[name][1000:6000] for name in names]


# --- S3 only -----------------------------------------------------------------------------


async def test_s3_open_reports_an_unreachable_endpoint(s3_endpoint: str) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    began = time.monotonic()
    with pytest.raises(StorageUnavailable) as caught:
        await S3BlobStore.open("s3://archive", **credentials(endpoint))
    message = str(caught.value)
    assert "'archive'" in message
    assert endpoint in message
    assert "connect" in message.lower()
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert time.monotonic() - began < 15


async def test_s3_open_reports_a_missing_bucket(s3_endpoint: str) -> None:
    with pytest.raises(StorageUnavailable, match=r"'no-such-bucket'.*does not exist"):
        await S3BlobStore.open("s3://no-such-bucket/x", **credentials(s3_endpoint))


@pytest.mark.parametrize("url", ["folder/blobs", "s3://", "http://bucket/x"])
async def test_s3_open_refuses_a_malformed_url(url: str) -> None:
    with pytest.raises(ValueError, match="s3://bucket"):
        await S3BlobStore.open(url)


async def test_s3_keys_live_under_the_prefix(s3_store: S3BlobStore, spool: Path) -> None:
    name = key()
    await s3_store.put(name, write(spool, b"data"))
    await s3_store.put(blob_key("clinic-a", name), write(spool, b"a's"))
    listed = await s3_store._client.list_objects_v2(Bucket=s3_store.bucket)
    assert sorted(item["Key"] for item in listed["Contents"]) == sorted(
        [f"archive/{name[:2]}/{name}", f"archive/clinic-a/{name[:2]}/{name}"]
    )


async def test_tenants_keys_are_distinct_blobs(store: BlobStore, spool: Path) -> None:
    """The same id under two tenants (and without one, as keys were before tenants) names
    three blobs."""
    name = key()
    contents = {name: b"old", blob_key("clinic-a", name): b"a", blob_key("clinic-b", name): b"b"}
    for each, data in contents.items():
        await store.put(each, write(spool, data))
    for each, data in contents.items():
        assert await read_all(store, each) == data
    await store.delete(blob_key("clinic-a", name))
    assert not await store.exists(blob_key("clinic-a", name))
    assert await store.exists(blob_key("clinic-b", name)) and await store.exists(name)


async def test_s3_failed_multipart_upload_is_aborted(
    s3_store: S3BlobStore, spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = s3_store._client.upload_part

    async def failing(**kwargs: Any) -> Any:
        if kwargs["PartNumber"] == 2:
            raise ClientError({"Error": {"Code": "InternalError"}}, "UploadPart")
        return await real(**kwargs)

    monkeypatch.setattr(s3_store._client, "upload_part", failing)
    source, _ = write_random(spool, 3 * PART_SIZE)
    name = key()
    with pytest.raises(OSError, match="upload"):
        await s3_store.put(name, source)
    assert source.exists()  # the caller still owns the spool file
    assert not await s3_store.exists(name)
    pending = await s3_store._client.list_multipart_uploads(Bucket=s3_store.bucket)
    assert pending.get("Uploads", []) == []


class BreakingBody:
    """A response body that fails after `limit` bytes, like a dropped connection."""

    def __init__(self, body: Any, limit: int) -> None:
        self.body = body
        self.left = limit

    async def read(self, amount: int) -> bytes:
        if self.left <= 0:
            raise ResponseStreamingError(error="connection reset (simulated)")
        piece: bytes = await self.body.read(min(amount, self.left))
        self.left -= len(piece)
        return piece

    def close(self) -> None:
        self.body.close()


async def test_s3_read_resumes_after_a_broken_stream(
    s3_store: S3BlobStore, spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(SIZE)
    name = key()
    await s3_store.put(name, write(spool, data))
    real = s3_store._client.get_object
    calls: list[dict[str, Any]] = []

    async def flaky(**kwargs: Any) -> Any:
        calls.append(kwargs)
        response = await real(**kwargs)
        if len(calls) <= 2:  # the first two responses break after one whole chunk
            response["Body"] = BreakingBody(response["Body"], MiB + 5000)
        return response

    monkeypatch.setattr(s3_store._client, "get_object", flaky)
    assert await read_all(s3_store, name, 100, SIZE - 200) == data[100:-100]
    assert [call["Range"] for call in calls] == [
        f"bytes=100-{SIZE - 101}",
        f"bytes={100 + MiB}-{SIZE - 101}",
        f"bytes={100 + 2 * MiB}-{SIZE - 101}",
    ]
    assert "IfMatch" not in calls[0] and calls[1]["IfMatch"] == calls[2]["IfMatch"]


async def test_s3_read_gives_up_after_bounded_retries(
    s3_store: S3BlobStore, spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = key()
    await s3_store.put(name, write(spool, os.urandom(SIZE)))
    real = s3_store._client.get_object
    calls = 0

    async def broken(**kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        response = await real(**kwargs)
        response["Body"] = BreakingBody(response["Body"], 1000)
        return response

    monkeypatch.setattr(s3_store._client, "get_object", broken)
    with pytest.raises(OSError, match="S3 read of blob"):
        await read_all(s3_store, name)
    assert calls == s3.STREAM_RETRIES + 1


# --- listing and quarantine (the orphan sweep's part of the contract) ----------------------


async def listed(store: BlobStore, page_size: int = 1000) -> list[list[BlobInfo]]:
    return [page async for page in store.list_blobs(page_size)]


async def test_listing_pages_every_blob_with_its_size_and_age(
    store: BlobStore, spool: Path
) -> None:
    """Keys with and without a tenant, in pages no larger than asked; ages by the store's
    clock (seconds since the write, so about 0 here)."""
    keys = [blob_key("clinic-a", key()), blob_key("clinic-b", key()), key(), key(), key()]
    for number, each in enumerate(keys):
        await store.put(each, write(spool, b"x" * number))
    pages = await listed(store, page_size=2)
    assert [len(page) for page in pages] == [2, 2, 1]
    found = {blob.key: blob for page in pages for blob in page}
    assert sorted(found) == sorted(keys)
    assert [found[each].size for each in keys] == [0, 1, 2, 3, 4]
    assert all(-5 < blob.age < 60 for blob in found.values())


async def test_listing_an_empty_store_gives_no_page(store: BlobStore) -> None:
    assert await listed(store) == []


async def test_quarantine_moves_a_blob_out_of_the_keys(store: BlobStore, spool: Path) -> None:
    kept, moved = blob_key("clinic-a", key()), blob_key("clinic-a", key())
    await store.put(kept, write(spool, b"kept"))
    await store.put(moved, write(spool, b"moved"))
    await store.quarantine(moved)
    await store.quarantine(moved)  # another node got there first: no error
    await store.quarantine(blob_key("clinic-a", key()))  # never existed: no error
    assert not await store.exists(moved)
    with pytest.raises(FileNotFoundError):
        await read_all(store, moved)
    assert [blob.key for page in await listed(store) for blob in page] == [kept]
    assert await read_all(store, kept) == b"kept"


async def test_folder_quarantine_keeps_the_layout(tmp_path: Path, spool: Path) -> None:
    store = FolderBlobStore(tmp_path / "blobs")
    name = key()
    await store.put(blob_key("clinic-a", name), write(spool, b"data"))
    await store.quarantine(blob_key("clinic-a", name))
    moved = tmp_path / "blobs" / ".quarantine" / "clinic-a" / name[:2] / name[2:4] / name
    assert moved.read_bytes() == b"data"


async def test_folder_listing_skips_what_is_not_a_blob(tmp_path: Path, spool: Path) -> None:
    """A copy's temporary `.part` file, a file out of place, stray folders: not blobs."""
    root = tmp_path / "blobs"
    store = FolderBlobStore(root)
    name = key()
    await store.put(name, write(spool, b"blob"))
    (root / name[:2] / name[2:4] / f"{name}.part").write_bytes(b"half")
    (root / "notes.txt").write_text("operator's")
    (root / "ab" / "cd").mkdir(parents=True)
    (root / "ab" / "cd" / key()).write_bytes(b"in the wrong folder")
    (root / "Bad Tenant" / name[:2] / name[2:4]).mkdir(parents=True)
    (root / "Bad Tenant" / name[:2] / name[2:4] / name).write_bytes(b"not a tenant")
    assert [blob.key for page in await listed(store) for blob in page] == [name]


async def test_folder_age_is_the_time_since_the_write(tmp_path: Path, spool: Path) -> None:
    store = FolderBlobStore(tmp_path / "blobs")
    name = key()
    await store.put(name, write(spool, b"old"))
    hour_ago = time.time() - 3600
    os.utime(tmp_path / "blobs" / name[:2] / name[2:4] / name, (hour_ago, hour_ago))
    [[blob]] = await listed(store)
    assert 3599 < blob.age < 3660


async def test_s3_quarantine_lives_under_the_prefix(s3_store: S3BlobStore, spool: Path) -> None:
    name = key()
    await s3_store.put(blob_key("clinic-a", name), write(spool, b"data"))
    await s3_store.quarantine(blob_key("clinic-a", name))
    listed_objects = await s3_store._client.list_objects_v2(Bucket=s3_store.bucket)
    assert [item["Key"] for item in listed_objects["Contents"]] == [
        f"archive/.quarantine/clinic-a/{name[:2]}/{name}"
    ]


async def test_s3_quarantine_of_an_object_over_the_copy_limit_copies_in_parts(
    s3_store: S3BlobStore, spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CopyObject stops at 5 GiB; larger blobs are copied part by part (limits lowered
    here to S3's smallest part, so 12 MiB takes three parts)."""
    monkeypatch.setattr(s3, "MAX_COPY_SIZE", 5 * MiB)
    monkeypatch.setattr(s3, "COPY_PART_SIZE", 5 * MiB)
    name = blob_key("clinic-a", key())
    path, digest = write_random(spool, 12 * MiB)
    await s3_store.put(name, path)
    await s3_store.quarantine(name)
    assert not await s3_store.exists(name)
    target = s3_store._object(name, (".quarantine",))
    answer = await s3_store._client.get_object(Bucket=s3_store.bucket, Key=target)
    async with answer["Body"] as body:
        assert hashlib.sha256(await body.read()).hexdigest() == digest


@pytest.mark.parametrize("prefix", ["", "a/b"])
async def test_s3_listing_with_any_prefix(s3_endpoint: str, spool: Path, prefix: str) -> None:
    """Keys come back whole under a prefix of several segments or none."""
    bucket = await create_bucket(s3_endpoint)
    url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    store = await S3BlobStore.open(url, part_size=PART_SIZE, **credentials(s3_endpoint))
    try:
        keys = [blob_key("clinic-a", key()), key()]
        for each in keys:
            await store.put(each, write(spool, b"x"))
        await store.quarantine(keys[0])
        assert [blob.key for page in await listed(store) for blob in page] == [keys[1]]
    finally:
        await store.close()


async def test_folder_put_syncs_the_blob_and_its_folders_at_once(
    tmp_path: Path, spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The syncs of a put were made one after the other: a blob that created its folders
    waited for five syncs in a row before it could be acknowledged (a modality on one
    association waits that long for every instance). They are independent, so they
    overlap."""
    store = FolderBlobStore(tmp_path / "blobs")
    real_fsync = os.fsync
    in_flight, most = 0, 0
    lock = threading.Lock()

    def slow_fsync(fd: int) -> None:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.3)  # a slow disk
        real_fsync(fd)
        with lock:
            in_flight -= 1

    monkeypatch.setattr(os, "fsync", slow_fsync)
    try:
        await store.put(blob_key("clinic-a", key()), write(spool, b"data"))
    finally:
        await store.close()
    assert most == 5  # the blob, its folder, two new parents and the root: all at once


async def test_folder_put_syncs_the_folders_its_rename_changed(
    tmp_path: Path, spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename survives a power cut only once its folder is synced, and a new folder once
    its parent is: before this, an acknowledged blob could vanish with its folder entry.
    The blob's bytes are synced by put too (the store service no longer does)."""
    root = tmp_path / "blobs"
    store = FolderBlobStore(root)
    synced = Synced(monkeypatch)
    name = key()
    await store.put(blob_key("clinic-a", name), write(spool, b"data"))
    tenant = root / "clinic-a"
    changed = [tenant / name[:2] / name[2:4], tenant / name[:2], tenant, root]
    assert [p for p in changed if p not in synced] == []
    assert changed[0] / name in synced  # its bytes too
    # A second blob in the same folders: only itself and its own folder changed.
    identities = {p: (p.stat().st_dev, p.stat().st_ino) for p in changed}
    synced.identities.clear()
    other = name[:4] + key()[4:]
    await store.put(blob_key("clinic-a", other), write(spool, b"more"))
    second = (changed[0] / other).stat()
    assert synced.identities == {identities[changed[0]], (second.st_dev, second.st_ino)}
