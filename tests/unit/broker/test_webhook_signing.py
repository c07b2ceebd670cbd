"""The webhook signature: an HMAC-SHA256 of `<timestamp>.<body>` with the secret, checked by a
receiver in constant time and refused when the timestamp is stale (a replay) or anything
signed was changed."""

from __future__ import annotations

import hashlib
import hmac

from app.broker.webhook_signing import signature, verify

SECRET = "a-secret-of-the-subscription"
BODY = b'{"Sequence": 7}'


def test_the_signature_is_the_hmac_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert signature(SECRET, 1700000000, BODY) == f"sha256={expected}"


def test_a_receiver_verifies_it_and_refuses_changes_and_replays() -> None:
    header = signature(SECRET, 1700000000, BODY)
    assert verify(SECRET, "1700000000", BODY, header, now=1700000010)
    assert not verify(SECRET, "1700000000", BODY + b" ", header, now=1700000010)
    assert not verify(SECRET, "1700000001", BODY, header, now=1700000010)  # other time
    assert not verify("another-secret", "1700000000", BODY, header, now=1700000010)
    assert not verify(SECRET, "1700000000", BODY, header, now=1700000000 + 301)  # replayed
    assert not verify(SECRET, "soon", BODY, header, now=1700000010)
