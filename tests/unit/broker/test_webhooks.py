"""What a receiver's answer means for a webhook entry: delivered, tried again later (the
receiver may take it), or refused at once (dead-lettered)."""

from __future__ import annotations

import pytest

from app.broker.webhooks import Verdict, classify


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DELIVERED),
        (202, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (408, Verdict.RETRY),  # Request Timeout
        (429, Verdict.RETRY),  # Too Many Requests
        (500, Verdict.RETRY),
        (502, Verdict.RETRY),
        (503, Verdict.RETRY),
        (400, Verdict.REFUSED),
        (401, Verdict.REFUSED),
        (404, Verdict.REFUSED),
        (410, Verdict.REFUSED),
        (413, Verdict.REFUSED),
        (301, Verdict.REFUSED),  # redirects are not followed
        (307, Verdict.REFUSED),
    ],
)
def test_classify(status: int, verdict: Verdict) -> None:
    attempt = classify(status)
    assert attempt.verdict is verdict
    assert attempt.reason.startswith(f"HTTP {status}")
