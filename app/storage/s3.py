"""Blob store in an S3 bucket (AWS S3, MinIO, Ceph RGW or any S3-compatible service).

Objects are written whole or not at all: a single PutObject below the part size, a multipart
upload above it (aborted on failure), so a reader never sees a half-written blob. Runtime
failures surface as `OSError` like the folder store's, a missing blob as `FileNotFoundError`.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from app.services.ports import BlobInfo
from app.storage.keys import QUARANTINE, key_of, key_path

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logging.getLogger(__name__)

MiB = 1024 * 1024
CHUNK_SIZE = MiB
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
MAX_PARTS = 10_000  # S3's maximum number of parts
MAX_COPY_SIZE = 5 * 1024 * MiB  # CopyObject's limit; larger objects are copied in parts
COPY_PART_SIZE = 512 * MiB
PARTS_IN_FLIGHT = 4  # parts uploading at once; each streams from the file, not memory
STREAM_RETRIES = 3  # re-issued GETs when a body breaks mid-stream

# Errors of a body that breaks while streaming; API calls are retried by botocore itself.
_STREAM_ERRORS = (ResponseStreamingError, ReadTimeoutError, IncompleteReadError)
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


class StorageUnavailable(RuntimeError):
    """The bucket cannot be used at start; the message says which one and why."""


class S3BlobStore:
    def __init__(
        self, client: Any, stack: AsyncExitStack, bucket: str, prefix: str, part_size: int
    ) -> None:
        # Use `open`, which checks the bucket; the client is aiobotocore's (untyped).
        self._client = client
        self._stack = stack
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = part_size

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        part_size: int = 16 * MiB,
    ) -> S3BlobStore:
        """Connect to `s3://bucket[/prefix]` and check the bucket answers.

        Options left empty fall back to botocore's usual chain (AWS_* variables,
        AWS_ENDPOINT_URL, ~/.aws files, instance roles).
        """
        bucket, prefix = parse_url(url)
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"S3 part size must be at least {MIN_PART_SIZE} bytes")
        session = AioSession()
        options: dict[str, Any] = {
            "region_name": region or None,
            "endpoint_url": endpoint_url or None,
            "aws_access_key_id": access_key_id or None,
            "aws_secret_access_key": secret_access_key or None,
        }
        stack = AsyncExitStack()
        try:
            client = await stack.enter_async_context(
                session.create_client("s3", config=_config(5, pool=50), **options)
            )
            # A separate probe that gives up quickly, so a wrong endpoint fails the start
            # in about a second instead of after the main client's retries with back-off.
            async with session.create_client("s3", config=_config(2, pool=1), **options) as probe:
                await probe.head_bucket(Bucket=bucket)
        except (BotoCoreError, ClientError) as exc:
            await stack.aclose()
            where = endpoint_url or "the default S3 endpoint"
            raise StorageUnavailable(
                f"S3 bucket {bucket!r} at {where} is not usable: {_explain(exc)}"
            ) from None
        except BaseException:
            await stack.aclose()
            raise
        return cls(client, stack, bucket, prefix, part_size)

    def _object(self, key: str, area: tuple[str, ...] = ()) -> str:
        # As in the folder store, with one level of fan-out (S3 scales by prefix).
        *tenant, fan_out, _, name = key_path(key)
        return "/".join((*self._root, *area, *tenant, fan_out, name))

    @property
    def _root(self) -> tuple[str, ...]:
        return (self.prefix,) if self.prefix else ()

    def _key_of(self, name: str) -> str | None:
        """The key of the object `name`, or None if it is not a blob of this store."""
        if self.prefix:
            if not name.startswith(self.prefix + "/"):
                return None
            name = name[len(self.prefix) + 1 :]
        *head, last = name.split("/")
        if head[:1] == [QUARANTINE]:
            return None
        return key_of((*head, last[2:4], last))  # the folder layout has a second level

    async def put(self, key: str, source: Path) -> None:
        name = self._object(key)
        size = (await asyncio.to_thread(source.stat)).st_size
        try:
            if size <= self.part_size:
                await self._put_single(name, source, size)
            else:
                await self._put_multipart(name, source, size)
        except (BotoCoreError, ClientError) as exc:
            raise OSError(f"S3 upload of blob {key} to bucket {self.bucket} failed: {exc}") from exc
        # Consumed only once stored: on failure the caller still owns (and removes) the file.
        await asyncio.to_thread(source.unlink, True)

    async def _put_single(self, name: str, source: Path, size: int) -> None:
        # A file object streams from disk; botocore rewinds it itself when it retries.
        handle = await asyncio.to_thread(source.open, "rb")
        try:
            await self._client.put_object(
                Bucket=self.bucket, Key=name, Body=handle, ContentLength=size
            )
        finally:
            handle.close()

    async def _put_multipart(self, name: str, source: Path, size: int) -> None:
        # Grow parts if needed to stay within S3's part count (a 16 MiB part allows 156 GiB).
        part_size = max(self.part_size, -(-size // MAX_PARTS))
        created = await self._client.create_multipart_upload(Bucket=self.bucket, Key=name)
        upload_id: str = created["UploadId"]
        limit = asyncio.Semaphore(PARTS_IN_FLIGHT)
        handle = await asyncio.to_thread(source.open, "rb")

        async def upload(number: int, offset: int) -> dict[str, Any]:
            async with limit:
                window = _FileWindow(handle.fileno(), offset, min(part_size, size - offset))
                answer = await self._client.upload_part(
                    Bucket=self.bucket,
                    Key=name,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=window,
                    ContentLength=window.length,
                )
                return {"PartNumber": number, "ETag": answer["ETag"]}

        offsets = range(0, size, part_size)
        uploads = [asyncio.create_task(upload(n, at)) for n, at in enumerate(offsets, 1)]
        try:
            parts = await asyncio.gather(*uploads)
            await self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=name,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            for task in uploads:
                task.cancel()
            await asyncio.gather(*uploads, return_exceptions=True)
            await self._abort(name, upload_id)
            raise
        finally:
            handle.close()

    async def _abort(self, name: str, upload_id: str) -> None:
        # Parts of an unfinished upload are billed until aborted; a failed abort is only
        # logged (a bucket lifecycle rule for incomplete uploads is the safety net).
        try:
            await self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=name, UploadId=upload_id
            )
        except (BotoCoreError, ClientError) as exc:
            log.warning("could not abort multipart upload %s of %s: %s", upload_id, name, exc)

    async def read(
        self, key: str, start: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        name = self._object(key)
        if length == 0:
            return
        position = start
        end = None if length is None else start + length  # exclusive
        etag: str | None = None
        retries = 0
        while end is None or position < end:
            response = await self._get(key, name, position, end, etag)
            if response is None:
                return  # from at or past the end to the end: nothing, as from a file
            etag = response.get("ETag")
            body = response["Body"]
            try:
                while chunk := await _next_chunk(body):
                    position += len(chunk)
                    yield chunk
            except _STREAM_ERRORS as exc:
                # The connection broke mid-body: ask again from the first byte not yet
                # yielded (a partly gathered chunk is simply fetched again).
                if retries >= STREAM_RETRIES:
                    raise OSError(f"S3 read of blob {key} failed: {exc}") from exc
                retries += 1
                log.info("S3 read of blob %s broke at byte %d (%s), resuming", key, position, exc)
                continue
            finally:
                body.close()
            break
        if end is not None and position < end:
            raise OSError(f"blob {key} is shorter than expected")

    async def _get(
        self, key: str, name: str, position: int, end: int | None, etag: str | None
    ) -> dict[str, Any] | None:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": name}
        if position or end is not None:
            args["Range"] = f"bytes={position}-{'' if end is None else end - 1}"
        if etag is not None:
            # A resumed read must continue the same object, not one written since.
            args["IfMatch"] = etag
        try:
            response: dict[str, Any] = await self._client.get_object(**args)
        except ClientError as exc:
            code = _code(exc)
            if code in _MISSING_CODES:
                raise FileNotFoundError(f"no blob {key} in bucket {self.bucket}") from None
            if code == "InvalidRange":  # the range starts at or past the end
                if end is None:
                    return None
                raise OSError(f"blob {key} is shorter than expected") from None
            if code == "PreconditionFailed":
                raise OSError(f"blob {key} changed while it was being read") from None
            raise OSError(f"S3 read of blob {key} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise OSError(f"S3 read of blob {key} failed: {exc}") from exc
        return response

    def local_path(self, key: str) -> Path | None:
        return None  # objects are read over HTTP only

    async def delete(self, key: str) -> None:
        # DeleteObject succeeds for a missing key, so deleting twice is harmless.
        try:
            await self._client.delete_object(Bucket=self.bucket, Key=self._object(key))
        except (BotoCoreError, ClientError) as exc:
            raise OSError(f"S3 delete of blob {key} failed: {exc}") from exc

    async def exists(self, key: str) -> bool:
        try:
            await self._client.head_object(Bucket=self.bucket, Key=self._object(key))
        except ClientError as exc:
            if _code(exc) in _MISSING_CODES:
                return False
            raise OSError(f"S3 lookup of blob {key} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise OSError(f"S3 lookup of blob {key} failed: {exc}") from exc
        return True

    async def list_blobs(self, page_size: int = 1000) -> AsyncIterator[list[BlobInfo]]:
        prefix = "/".join(self._root) + "/" if self.prefix else ""
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": page_size}
        while True:
            try:
                answer = await self._client.list_objects_v2(**args)
            except (BotoCoreError, ClientError) as exc:
                raise OSError(f"S3 listing of bucket {self.bucket} failed: {exc}") from exc
            now = _service_time(answer)
            page = [
                BlobInfo(key, item["Size"], (now - item["LastModified"]).total_seconds())
                for item in answer.get("Contents", ())
                if (key := self._key_of(item["Key"])) is not None
            ]
            if page:
                yield page
            if not answer.get("IsTruncated"):
                return
            args["ContinuationToken"] = answer["NextContinuationToken"]

    async def quarantine(self, key: str) -> None:
        source, target = self._object(key), self._object(key, (QUARANTINE,))
        try:
            try:
                head = await self._client.head_object(Bucket=self.bucket, Key=source)
            except ClientError as exc:
                if _code(exc) in _MISSING_CODES:
                    return  # moved or deleted by another node meanwhile
                raise
            if head["ContentLength"] <= MAX_COPY_SIZE:
                await self._client.copy_object(
                    Bucket=self.bucket,
                    Key=target,
                    CopySource={"Bucket": self.bucket, "Key": source},
                )
            else:
                await self._copy_in_parts(source, target, head["ContentLength"])
            await self._client.delete_object(Bucket=self.bucket, Key=source)
        except (BotoCoreError, ClientError) as exc:
            raise OSError(f"S3 quarantine of blob {key} failed: {exc}") from exc

    async def _copy_in_parts(self, source: str, target: str, size: int) -> None:
        """Copy an object over CopyObject's limit, part by part on the service's side."""
        part_size = max(COPY_PART_SIZE, -(-size // MAX_PARTS))
        created = await self._client.create_multipart_upload(Bucket=self.bucket, Key=target)
        upload_id: str = created["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, size, part_size), 1):
                end = min(start + part_size, size) - 1
                answer = await self._client.upload_part_copy(
                    Bucket=self.bucket,
                    Key=target,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource={"Bucket": self.bucket, "Key": source},
                    CopySourceRange=f"bytes={start}-{end}",
                )
                parts.append({"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]})
            await self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=target,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            await self._abort(target, upload_id)
            raise

    async def close(self) -> None:
        await self._stack.aclose()


async def _next_chunk(body: Any) -> bytes:
    """Up to CHUNK_SIZE bytes of a response body (b"" at its end).

    aiohttp hands out whatever the socket delivered (often a few KB); gathering ~1 MiB
    keeps the per-chunk overhead of the HTTP response streaming them low.
    """
    pieces: list[bytes] = []
    size = 0
    while size < CHUNK_SIZE:
        piece: bytes = await body.read(CHUNK_SIZE - size)
        if not piece:
            break
        pieces.append(piece)
        size += len(piece)
    return b"".join(pieces)


class _FileWindow(io.RawIOBase):
    """Bytes [offset, offset + length) of an open file, as a seekable stream of their own.

    A part is sent straight from the spool file: botocore reads it once to sign it and
    seeks back (and again on a retry), aiohttp then streams it in small chunks, so no part
    is ever held in memory. `pread` keeps concurrent parts off a shared file position.
    """

    def __init__(self, fd: int, offset: int, length: int) -> None:
        super().__init__()
        self.fd = fd
        self.offset = offset
        self.length = length
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.length}[whence]
        self.position = max(0, base + offset)
        return self.position

    def read(self, size: int | None = -1, /) -> bytes:
        left = max(0, self.length - self.position)
        wanted = left if size is None or size < 0 else min(size, left)
        data = os.pread(self.fd, wanted, self.offset + self.position) if wanted else b""
        self.position += len(data)
        return data

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        with memoryview(buffer).cast("B") as view:
            data = self.read(view.nbytes)
            view[: len(data)] = data
        return len(data)


def parse_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix")."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"storage URL {url!r} is not of the form s3://bucket[/prefix]")
    return parts.netloc, parts.path.strip("/")


def _config(attempts: int, *, pool: int) -> AioConfig:
    return AioConfig(
        retries={"max_attempts": attempts, "mode": "standard"},
        max_pool_connections=pool,
        connect_timeout=10,
        read_timeout=60,
        # Checksums only where the API requires them: botocore's newer default (trailing
        # CRC checksums on every upload) is refused by several S3-compatible stores.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


def _service_time(answer: dict[str, Any]) -> datetime:
    """The time by the S3 service's clock (its Date header), which dated the objects;
    this machine's clock when the header is missing."""
    date = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return parsedate_to_datetime(date) if date else datetime.now(UTC)
    except (TypeError, ValueError):
        return datetime.now(UTC)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _explain(exc: BotoCoreError | ClientError) -> str:
    if isinstance(exc, ClientError):
        code = _code(exc)
        if code in ("404", "NoSuchBucket", "NotFound"):
            return "the bucket does not exist"
        if code in ("403", "AccessDenied", "Forbidden"):
            return "access denied (check the credentials and the bucket policy)"
        return f"the service answered {code or 'an error'}"
    return str(exc)
