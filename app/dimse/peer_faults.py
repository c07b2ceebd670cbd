"""pynetdicom's log lines about what a peer did, at the level of a client's fault.

pynetdicom logs at ERROR, with a traceback, a peer that closes or stalls in the middle of a
PDU (a port scan, a flood of half-sent requests, a modality switched off) and an
association aborted for idling past PACS_DIMSE_IDLE_TIMEOUT; ERROR is for our faults, so
these become INFO lines without a traceback, and a PDU of an unknown type (someone speaking
HTTP to the DICOM port) a WARNING.
"""

from __future__ import annotations

import logging

_DUL_MESSAGES = {
    "Connection closed before the entire PDU was received": logging.INFO,
}
IDLE = "association aborted: idle for longer than PACS_DIMSE_IDLE_TIMEOUT"


def _set_level(record: logging.LogRecord, level: int) -> None:
    record.levelno, record.levelname = level, logging.getLevelName(level)


def _dul(record: logging.LogRecord) -> bool:
    if record.levelno != logging.ERROR:
        return True
    if record.exc_info and isinstance(record.exc_info[1], OSError):
        _set_level(record, logging.INFO)  # the reset or timeout behind the line above
        record.exc_info, record.exc_text = None, None
    elif (level := _DUL_MESSAGES.get(record.getMessage())) is not None:
        _set_level(record, level)
    elif record.getMessage().startswith("Unknown PDU type received"):
        _set_level(record, logging.WARNING)
    return True


def _association(record: logging.LogRecord) -> bool:
    if record.levelno == logging.ERROR and record.getMessage() == "Network timeout reached":
        _set_level(record, logging.INFO)
        record.msg, record.args = IDLE, None
    return True


def install() -> None:
    logging.getLogger("pynetdicom.dul").addFilter(_dul)
    logging.getLogger("pynetdicom.association").addFilter(_association)
