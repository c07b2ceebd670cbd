"""uvicorn's access log (on at log level debug) without query strings: a QIDO-RS query
names patients (PatientName, PatientBirthDate), and patient data stays out of the
application log; the audit trail keeps the query instead."""

from __future__ import annotations

import logging

ACCESS_LOGGER = "uvicorn.access"


class PathOnly(logging.Filter):
    """Cut the query string off the request line uvicorn logs.

    uvicorn logs `'%s - "%s %s HTTP/%s" %d'` with (client, method, path with query,
    version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], args[2].partition("?")[0], *args[3:])
        return True


def without_query_strings() -> None:
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, PathOnly) for f in logger.filters):
        logger.addFilter(PathOnly())
