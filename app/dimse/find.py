"""C-FIND SCP (Patient Root and Study Root): the identifier becomes the `Query` a QIDO-RS
request with the same keys would give, run by the search service a page at a time.

Each match is answered with the identifier's keys, filled from the index (keys the index
has no value for come back empty), plus the unique keys of the query level and the levels
above it. RetrieveAETitle is our AE title. Text is returned in UTF-8 (ISO_IR 192) whenever
a value is not ASCII.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

import orjson
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from app.audit.event import EventOutcome
from app.auth.ae_policy import DimseService
from app.dicom.levels import SPECIFIC_CHARACTER_SET, Level
from app.dimse.audit import record_query, refuse
from app.dimse.bridge import Bridge, access_for, policy_of
from app.dimse.contexts import FIND_MODELS
from app.dimse.find_encoding import encode_element, value_bytes
from app.dimse.message import CommandField
from app.dimse.operation import Operation
from app.dimse.status import Status, with_comment
from app.query.identifier import QUERY_RETRIEVE_LEVEL, UNIQUE_KEYS, Model, parse_identifier
from app.query.matching import QueryError
from app.services.ports import Json

log = logging.getLogger(__name__)

PAGE = 100
# Syntaxes whose responses find_encoding.py writes: whether each is implicit VR.
_LITTLE_ENDIAN: dict[str, bool] = {ImplicitVRLittleEndian: True, ExplicitVRLittleEndian: False}
RETRIEVE_AE_TITLE = 0x00080054
UTF8 = "ISO_IR 192"

_LEVELS = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.INSTANCE)


async def handle_find(operation: Operation, bridge: Bridge) -> None:
    async def answer(status: int | Dataset, identifier: Dataset | None = None) -> None:
        await operation.respond(CommandField.C_FIND_RSP, status, identifier)

    assoc = operation.assoc
    sop_class = operation.sop_class
    model = FIND_MODELS.get(sop_class)
    who = assoc.peer
    if model is None:
        await answer(Status.SOP_CLASS_NOT_SUPPORTED)
        return
    policy = policy_of(assoc, bridge)
    if not policy.allows(DimseService.FIND):
        log.info("C-FIND from %s refused: not authorized", who)
        await answer(refuse(assoc, bridge, DimseService.FIND))
        return
    access = access_for(assoc, policy)
    request: Dataset | None = None

    def audit(outcome: EventOutcome = EventOutcome.SUCCESS, reason: str = "") -> None:
        record_query(assoc, bridge, access, request, sop_class, outcome=outcome, reason=reason)

    try:
        request = operation.identifier()
        query = parse_identifier(request, model)
    except QueryError as exc:
        # Without the caller's value (names, dates): the response and the audit trail
        # carry the whole reason, the application log does not.
        log.info("C-FIND from %s refused: %s", who, exc.loggable)
        audit(EventOutcome.MINOR_FAILURE, str(exc))
        await answer(with_comment(Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc)))
        return
    except Exception as exc:  # pydicom raises many types for an undecodable identifier
        # pydicom's messages quote the value it could not decode: the kind only.
        log.info("C-FIND from %s: cannot decode the identifier (%s)", who, type(exc).__name__)
        audit(EventOutcome.MINOR_FAILURE, "cannot decode the identifier")
        await answer(with_comment(Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, "cannot decode"))
        return
    sent = 0
    offset = 0
    implicit = _LITTLE_ENDIAN.get(operation.context.transfer_syntax)
    wanted = _wanted(request, query.level, model)  # the keys of every match's response
    ae_title = bridge.config.ae_title
    # Recorded once the first page is found: answered, whether or not the caller reads
    # every match. Recorded after the answer is handed to the transport, not before it.
    unaudited = False
    try:
        while True:
            try:
                page = await bridge.archive.search.search(
                    access, replace(query, limit=PAGE, offset=offset)
                )
            except Exception:
                log.exception("C-FIND from %s: the search failed", who)
                audit(EventOutcome.SERIOUS_FAILURE, "the search failed")
                await answer(with_comment(Status.PROCESSING_FAILURE, "the search failed"))
                return
            unaudited |= offset == 0
            for number, attrs in enumerate(page):
                if operation.cancelled:
                    log.info(
                        "C-FIND %s from %s: cancelled after %d matches", query.level, who, sent
                    )
                    await answer(Status.CANCEL)
                    return
                encoded = implicit is not None and response_bytes(
                    request, attrs, query.level, model, ae_title, implicit=implicit, wanted=wanted
                )
                identifier = (
                    None
                    if encoded
                    else response(request, attrs, query.level, model, ae_title, wanted=wanted)
                )
                await operation.respond(
                    CommandField.C_FIND_RSP,
                    Status.PENDING,
                    identifier,
                    encoded=encoded or None,
                    more=True,  # a page's matches go out together, then the final status
                )
                sent += 1
                if number < len(page) - 1:
                    await asyncio.sleep(0)  # let the association's reader see a C-CANCEL
            if len(page) < PAGE:
                break
            await assoc.flush()  # this page's matches, before the next one is searched
            await asyncio.sleep(0)  # a C-CANCEL that came meanwhile, before the next search
            if unaudited:
                unaudited = False
                audit()
            offset += PAGE
        await answer(Status.SUCCESS)
    finally:
        if unaudited:
            audit()
    log.info("C-FIND %s from %s: %d matches", query.level, who, sent)


def response(
    request: Dataset,
    attrs: Json,
    level: Level,
    model: Model,
    ae_title: str,
    *,
    wanted: dict[int, str] | None = None,
) -> Dataset:
    """The response identifier of one match: the request's keys with the match's values
    (`wanted`: the request's `_wanted`, if the caller has it already)."""
    out = Dataset()
    ascii_only = True
    wanted = wanted if wanted is not None else _wanted(request, level, model)
    for tag, vr in wanted.items():
        if tag == QUERY_RETRIEVE_LEVEL:
            out.QueryRetrieveLevel = level.value
        elif tag == RETRIEVE_AE_TITLE:
            out.RetrieveAETitle = ae_title
        elif tag != SPECIFIC_CHARACTER_SET:
            value = attrs.get(f"{tag:08X}")
            found = _from_json(tag, value) if value else None
            if found is not None:
                ascii_only &= orjson.dumps(value).isascii()
                out[tag] = found
            elif vr:
                out[tag] = DataElement(tag, vr, None)
    if not ascii_only:
        out.SpecificCharacterSet = UTF8
    elif SPECIFIC_CHARACTER_SET in wanted:
        out.SpecificCharacterSet = request[SPECIFIC_CHARACTER_SET].value or ""
    return out


def response_bytes(
    request: Dataset,
    attrs: Json,
    level: Level,
    model: Model,
    ae_title: str,
    *,
    implicit: bool,
    wanted: dict[int, str] | None = None,
) -> bytes | None:
    """`response(...)` encoded in (implicit or explicit) VR little endian without a
    Dataset (see find_encoding.py); None when one of its values needs pydicom."""
    elements: dict[int, tuple[str, bytes]] = {}
    wanted = wanted if wanted is not None else _wanted(request, level, model)
    for tag, vr in wanted.items():
        if tag == QUERY_RETRIEVE_LEVEL:
            elements[tag] = ("CS", level.value.encode())
        elif tag == RETRIEVE_AE_TITLE:
            elements[tag] = ("AE", ae_title.encode())
        elif tag != SPECIFIC_CHARACTER_SET:
            value = attrs.get(f"{tag:08X}")
            if value:  # as `response`: the index's value, with its VR (maybe empty)
                kind = value.get("vr") if isinstance(value, dict) else None
                raw = value_bytes(kind, value) if isinstance(kind, str) else None
                if raw is None or not isinstance(kind, str):
                    return None
                elements[tag] = (kind, raw)
            elif vr:  # none: the request's key, empty
                if len(vr) != 2:
                    return None
                elements[tag] = (vr, b"")
    if not all(raw.isascii() for _, raw in elements.values()):
        elements[SPECIFIC_CHARACTER_SET] = ("CS", UTF8.encode())
    elif SPECIFIC_CHARACTER_SET in request:
        charset = request[SPECIFIC_CHARACTER_SET].value or ""
        if not isinstance(charset, str):
            return None
        elements[SPECIFIC_CHARACTER_SET] = ("CS", charset.encode())
    return b"".join(
        encode_element(tag, vr, raw, implicit) for tag, (vr, raw) in sorted(elements.items())
    )


def _wanted(request: Dataset, level: Level, model: Model) -> dict[int, str]:
    """The keys of a response: the request's (with their VRs), then the unique keys of
    the query level and the levels above it (without a VR: only sent with a value)."""
    wanted: dict[int, str] = {}
    for key in request:
        if key.tag.element != 0 and key.tag.group > 0x0002:
            wanted[int(key.tag)] = key.VR
    first = 0 if model == "patient" else 1
    for unique_level in _LEVELS[first : _LEVELS.index(level) + 1]:
        wanted.setdefault(UNIQUE_KEYS[unique_level], "")
    return wanted


def _from_json(tag: int, value: Any) -> DataElement | None:
    if not isinstance(value, dict) or "BulkDataURI" in value:
        return None  # bulk data is retrieved, never returned by a query
    key = f"{tag:08X}"
    try:
        return Dataset.from_json({key: value})[tag]
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("C-FIND: cannot return %s (%s)", key, type(exc).__name__)
        return None
