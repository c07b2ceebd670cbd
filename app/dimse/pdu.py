"""DICOM Upper Layer PDUs on an asyncio stream (PS3.8 9.3): read one, write the small ones.

A PDU is a 6-byte header (type, reserved, 4-byte big-endian length) and its body. Reading
checks the type and bounds the length before a byte of the body is read, so a peer that
sends garbage or announces a huge PDU costs one header read and gets an A-ABORT, never a
buffer of the size it asked for. The association PDUs (A-ASSOCIATE-RQ/AC/RJ) are encoded
and decoded by `pynetdicom.pdu`; P-DATA-TF is `pdata.py`'s.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from enum import IntEnum

HEADER = struct.Struct(">BxL")


class PduType(IntEnum):
    ASSOCIATE_RQ = 0x01
    ASSOCIATE_AC = 0x02
    ASSOCIATE_RJ = 0x03
    P_DATA_TF = 0x04
    RELEASE_RQ = 0x05
    RELEASE_RP = 0x06
    ABORT = 0x07


# A-ABORT reasons of the service provider (PS3.8 9.3.8, source 2).
class AbortReason(IntEnum):
    NOT_SPECIFIED = 0x00
    UNRECOGNIZED_PDU = 0x01
    UNEXPECTED_PDU = 0x02
    UNRECOGNIZED_PARAMETER = 0x04
    UNEXPECTED_PARAMETER = 0x05
    INVALID_PARAMETER = 0x06


# A-ABORT sources (PS3.8 9.3.8).
SOURCE_USER = 0x00
SOURCE_PROVIDER = 0x02

# The association PDUs are small (contexts and user information): 128 contexts of a few
# dozen transfer syntaxes stay well below this, whatever our maximum P-DATA size.
MAX_ASSOCIATE_PDU = 1 << 20


class PduError(Exception):
    """The peer broke the protocol: answer with an A-ABORT of `reason`."""

    def __init__(self, message: str, reason: AbortReason = AbortReason.INVALID_PARAMETER):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Pdu:
    type: PduType
    body: bytes


async def read_pdu(reader: asyncio.StreamReader, max_body: int) -> Pdu:
    """The next PDU of `reader`. `max_body` bounds a P-DATA-TF (the maximum length we
    announced); the others are bounded by MAX_ASSOCIATE_PDU. Raises PduError for an
    unknown type or an oversized length, asyncio.IncompleteReadError when the peer closes
    in the middle of a PDU."""
    header = await reader.readexactly(HEADER.size)
    kind, length = HEADER.unpack(header)
    try:
        pdu_type = PduType(kind)
    except ValueError:
        raise PduError(f"unknown PDU type 0x{kind:02X}", AbortReason.UNRECOGNIZED_PDU) from None
    limit = max_body if pdu_type is PduType.P_DATA_TF else MAX_ASSOCIATE_PDU
    if length > limit:
        raise PduError(f"{pdu_type.name} of {length} bytes is longer than the {limit} allowed")
    return Pdu(pdu_type, await reader.readexactly(length) if length else b"")


def header(pdu_type: PduType, length: int) -> bytes:
    return HEADER.pack(pdu_type, length)


def abort(source: int = SOURCE_PROVIDER, reason: int = AbortReason.NOT_SPECIFIED) -> bytes:
    """An A-ABORT PDU (PS3.8 9.3.8): reserved, reserved, source, reason."""
    return header(PduType.ABORT, 4) + bytes((0, 0, source, reason))


RELEASE_RQ = header(PduType.RELEASE_RQ, 4) + bytes(4)
RELEASE_RP = header(PduType.RELEASE_RP, 4) + bytes(4)


def abort_fields(body: bytes) -> tuple[int, int]:
    """Source and reason of an A-ABORT body (zeros if it is too short to say)."""
    return (body[2], body[3]) if len(body) >= 4 else (0, 0)
