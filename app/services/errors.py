"""Domain errors raised by services; the protocol layers map them to statuses."""

from __future__ import annotations


class ArchiveError(Exception):
    """Base class: the message is safe and meant for the caller."""


class NotFound(ArchiveError):
    pass


class NotAcceptable(ArchiveError):
    """The caller accepts no representation we can produce (HTTP 406)."""


class Unsupported(ArchiveError):
    """A valid request for something not implemented for this object (HTTP 501)."""


class BadRequest(ArchiveError):
    pass


class Conflict(ArchiveError):
    """The request contradicts what exists (HTTP 409)."""


class StorageInconsistent(ArchiveError):
    """The index names a blob the store does not have (HTTP 500 with this message)."""


class Overloaded(ArchiveError):
    """Too much work of this kind is waiting (HTTP 503 with Retry-After)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
