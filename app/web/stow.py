"""STOW-RS: Store Instances (PS3.18 10.5)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from app.auth.principal import Access, Permission
from app.dicom.multipart import MultipartError, iter_parts, parse_media_type
from app.dicom.tags import json_key
from app.services.archive import Archive
from app.services.store import FailureReason, StoreResult
from app.web.access import request_access
from app.web.auditing import store_event
from app.web.errors import PayloadTooLarge, UnsupportedMediaType, path_uids
from app.web.urls import base_url, instance_url, study_url

log = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
_PARTS_BETWEEN_YIELDS = 32  # a small part costs some 8-30 us: about 1 ms between yields
# Parts of one request stored (blob, index) at once while the next are received: enough
# to fill an index batch with one request's parts; each holds a spooled file, not memory.
_PARTS_STORING = 16
_SETTLED_BETWEEN_YIELDS = 4096  # results gathered per slice: well under a millisecond


async def _limited(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The body, failing once it passes `limit` bytes. The bytes up to the limit are passed
    on first, so that which parts get stored does not depend on how the network cut the
    body into chunks: exactly those that end (with their delimiter) within the limit."""
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if limit and received > limit:
            if within := len(chunk) - (received - limit):
                yield chunk[:within]
            raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
        if chunk:
            yield chunk


async def store_instances(request: Request) -> Response:
    archive: Archive = request.app.state.archive
    access = request_access(request)
    access.require(Permission.WRITE)  # before reading a body that would be refused
    study, _, _ = path_uids(request)
    limit = archive.settings.max_request_bytes
    length = request.headers.get("content-length", "")
    if limit and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"request body of {length} bytes exceeds the limit of {limit}")
    media_type, params = parse_media_type(request.headers.get("content-type", ""))
    body = _limited(request, limit)
    results: list[StoreResult] = []
    if media_type == "application/dicom":
        results.append(
            await archive.store.store_stream(
                access, body, study_instance_uid=study, audit=store_event(request, access)
            )
        )
    elif media_type == "multipart/related":
        part_type = params.get("type", "application/dicom").lower()
        if part_type != "application/dicom":
            raise UnsupportedMediaType(
                f'multipart/related; type="{part_type}" is not supported: send '
                'type="application/dicom" (PS3.10 files)'
            )
        boundary = params.get("boundary")
        if not boundary:
            raise MultipartError("the Content-Type has no boundary parameter")
        await _store_parts(request, archive, access, body, boundary, study=study, results=results)
    else:
        raise UnsupportedMediaType(
            f"Content-Type {media_type or '(none)'!r} is not supported: send "
            'multipart/related; type="application/dicom" or application/dicom'
        )
    return _response(request, study, results)


# A part received, and being stored (its number, for messages), or already answered.
_Entry = StoreResult | tuple[int, "asyncio.Future[StoreResult]"]


async def _store_parts(
    request: Request,
    archive: Archive,
    access: Access,
    body: AsyncIterator[bytes],
    boundary: str,
    *,
    study: str | None,
    results: list[StoreResult],
) -> None:
    """Store each part; a part is received (spooled, parsed) before the next is read, and
    stored and indexed while the next ones arrive, up to _PARTS_STORING at once, so the
    parts of one request share index commits. Every part's result is awaited before the
    response: it says only what is durable."""
    number = 0
    audit = store_event(request, access)
    max_parts = archive.settings.max_stow_parts
    entries: list[_Entry] = []
    storing: set[asyncio.Future[StoreResult]] = set()  # of entries, those not done yet
    try:
        async for part in iter_parts(body, boundary):
            number += 1
            if number % _PARTS_BETWEEN_YIELDS == 0:
                # Parts already received are read without waiting for the network, so a
                # body of thousands of small (empty, refused) parts held the event loop, and
                # /health, for its whole length (150-570 ms for 550 KB): let others in.
                await asyncio.sleep(0)
            if max_parts and number > max_parts:
                results.extend(await _settled(entries))
                _too_many_parts(max_parts, results)
                break
            if part.content_type not in ("application/dicom", ""):
                entries.append(
                    StoreResult(
                        False,
                        reason=FailureReason.CANNOT_UNDERSTAND,
                        message=f"part {number} has Content-Type {part.content_type!r}; "
                        "expected application/dicom",
                    )
                )
                continue
            chunks = await _unless_empty(part)
            if chunks is None:
                # Nothing to parse, spool or audit: answered here, cheaply.
                entries.append(
                    StoreResult(
                        False,
                        reason=FailureReason.CANNOT_UNDERSTAND,
                        message=f"part {number} is empty",
                    )
                )
                continue
            future = await archive.store.receive_stream(
                access, chunks, study_instance_uid=study, audit=audit
            )
            entries.append((number, future))
            storing.add(future)
            await _within_window(storing)
    except MultipartError as exc:
        results.extend(await _settled(entries))
        if not results:
            raise  # nothing processed: the request as a whole is malformed (400)
        # Parts already stored stay stored; report the broken remainder as a failure.
        results.append(StoreResult(False, reason=FailureReason.CANNOT_UNDERSTAND, message=str(exc)))
    except PayloadTooLarge as exc:
        results.extend(await _settled(entries))
        # A chunked body passed the limit while streaming. Parts before it are stored (each
        # is indexed as it arrives, so that memory stays bounded): they are listed, with
        # the part being received as a failure, instead of a 413 that hides them. Nothing
        # stored yet: the 413 says everything.
        if not any(r.ok for r in results):
            raise
        # The limit may trip inside a part or between two (looking for the next one).
        cut = number + 1 if len(results) == number else number
        results.append(
            StoreResult(
                False,
                # "Refused: out of resources": the sender may resend the rest in smaller requests.
                reason=FailureReason.OUT_OF_RESOURCES,
                message=f"{exc}: part {cut} and any after it were not stored",
            )
        )
    else:
        results.extend(await _settled(entries))
    if not results:
        raise MultipartError("the multipart body contains no parts")


async def _within_window(storing: set[asyncio.Future[StoreResult]]) -> None:
    """Wait while more than _PARTS_STORING parts of the request are being stored; `storing`
    keeps those not done (a set of at most that many: no scan of every part so far)."""
    while True:
        storing.difference_update([f for f in storing if f.done()])
        if len(storing) <= _PARTS_STORING:
            return
        await asyncio.wait(storing, return_when=asyncio.FIRST_COMPLETED)


async def _settled(entries: list[_Entry]) -> list[StoreResult]:
    """The results of `entries`, in order, once every part is stored; `entries` empties."""
    results: list[StoreResult] = []
    for count, entry in enumerate(entries, 1):
        if count % _SETTLED_BETWEEN_YIELDS == 0:
            # Tens of thousands of parts answered at once (empty, refused) would otherwise
            # hold the loop here (awaiting a finished store does not yield either).
            await asyncio.sleep(0)
        if isinstance(entry, StoreResult):
            results.append(entry)
            continue
        number, storing = entry
        result = await storing
        if not result.ok and not result.sop_instance_uid:
            result.message = f"part {number}: {result.message}"
        results.append(result)
    entries.clear()
    return results


def _too_many_parts(limit: int, results: list[StoreResult]) -> None:
    """Refuse the rest of a body with more than `limit` parts: a 413 when nothing was
    stored, otherwise a failure item beside the stored ones, which are never unreported."""
    message = (
        f"the request has more than {limit} parts, the limit per request "
        "(PACS_MAX_STOW_PARTS); the parts after it were not read"
    )
    if not any(r.ok for r in results):
        raise PayloadTooLarge(message)
    results.append(StoreResult(False, reason=FailureReason.CANNOT_UNDERSTAND, message=message))


async def _unless_empty(part: AsyncIterable[bytes]) -> AsyncIterator[bytes] | None:
    """The part's body as chunks, or None when it has none."""
    chunks = aiter(part)
    first = await anext(chunks, None)
    if first is None:
        return None

    async def whole() -> AsyncIterator[bytes]:
        yield first
        async for chunk in chunks:
            yield chunk

    return whole()


# The attributes of the Store Instances Response Module (PS3.18 Table 10.5.3-1).
_REFERENCED_SOP_CLASS = json_key("ReferencedSOPClassUID")
_REFERENCED_SOP_INSTANCE = json_key("ReferencedSOPInstanceUID")
_RETRIEVE_URL = json_key("RetrieveURL")
_WARNING_REASON = json_key("WarningReason")
_FAILURE_REASON = json_key("FailureReason")
_ERROR_COMMENT = json_key("ErrorComment")
_FAILED_SOP_SEQUENCE = json_key("FailedSOPSequence")
_REFERENCED_SOP_SEQUENCE = json_key("ReferencedSOPSequence")


def _item(result: StoreResult, base: str) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if result.sop_class_uid:
        item[_REFERENCED_SOP_CLASS] = {"vr": "UI", "Value": [result.sop_class_uid]}
    if result.sop_instance_uid:
        item[_REFERENCED_SOP_INSTANCE] = {"vr": "UI", "Value": [result.sop_instance_uid]}
    if result.ok:
        assert result.study_instance_uid and result.series_instance_uid
        assert result.sop_instance_uid
        url = instance_url(
            base,
            result.study_instance_uid,
            result.series_instance_uid,
            result.sop_instance_uid,
        )
        item[_RETRIEVE_URL] = {"vr": "UR", "Value": [url]}
        if result.warnings:
            item[_WARNING_REASON] = {"vr": "US", "Value": [FailureReason.COERCION_OF_DATA_ELEMENTS]}
            item[_ERROR_COMMENT] = {"vr": "LO", "Value": ["; ".join(result.warnings)]}
    else:
        assert result.reason is not None
        item[_FAILURE_REASON] = {"vr": "US", "Value": [int(result.reason)]}
        # Error Comment: the reason in words, for people reading the response.
        item[_ERROR_COMMENT] = {"vr": "LO", "Value": [result.message]}
    return item


def _response(request: Request, study: str | None, results: list[StoreResult]) -> Response:
    base = base_url(request)
    stored = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    body: dict[str, Any] = {}
    studies = {r.study_instance_uid for r in stored}
    target = study or (studies.pop() if len(studies) == 1 else None)
    url = {"vr": "UR", "Value": [study_url(base, target)]} if target else {"vr": "UR"}
    body[_RETRIEVE_URL] = url
    if failed:
        body[_FAILED_SOP_SEQUENCE] = {"vr": "SQ", "Value": [_item(r, base) for r in failed]}
    if stored:
        body[_REFERENCED_SOP_SEQUENCE] = {"vr": "SQ", "Value": [_item(r, base) for r in stored]}
    status = 200 if not failed else (202 if stored else 409)
    if failed:
        # One line per request, whatever its number of parts; reason codes only, as
        # messages may quote the objects' own values.
        reasons = Counter(r.reason.name if r.reason else "unknown" for r in failed)
        log.info(
            "STOW: %d stored, %d failed (%s)",
            len(stored),
            len(failed),
            ", ".join(f"{name} x{count}" for name, count in sorted(reasons.items())),
        )
    return Response(orjson.dumps(body), status_code=status, media_type=DICOM_JSON)
