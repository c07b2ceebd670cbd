"""The signature of a webhook delivery, as Stripe and GitHub sign theirs: an HMAC-SHA256,
keyed by the subscription's secret, of the timestamp, a dot and the body, sent as
`X-Pacs-Signature: sha256=<hex>` beside `X-Pacs-Timestamp: <Unix seconds>`.

A receiver recomputes it over the raw body and compares in constant time (`verify`), and
refuses a timestamp far from its clock: signing the timestamp with the body stops a
captured request from being replayed later (a redelivery is signed anew).
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Pacs-Signature"
TIMESTAMP_HEADER = "X-Pacs-Timestamp"
# How far a receiver should let the timestamp be from its clock, in seconds.
DEFAULT_TOLERANCE = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The header value: `sha256=` and the hex HMAC of `<timestamp>.<body>`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    header: str,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> bool:
    """Whether `header` signs `body` at `timestamp` (the two headers' text) with `secret`,
    and the timestamp is within `tolerance` seconds of `now`."""
    try:
        when = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - when) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, when, body), header)
