"""A flood of refused connections is a few log lines: the first at once, then a tally at
most once per interval."""

from __future__ import annotations

import logging
import time

import pytest

from app.throttled_log import ThrottledLog


def test_first_event_is_logged_and_the_rest_are_tallied_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("tests.throttled")
    throttled = ThrottledLog(logger, interval=0.2)
    with caplog.at_level(logging.INFO, logger="tests.throttled"):
        for n in range(1000):
            throttled.log("connection refused", f"127.0.0.{n % 7 + 2}")
        assert [r.getMessage() for r in caplog.records] == ["connection refused: 127.0.0.2"]
        time.sleep(0.25)
        throttled.log("connection refused", "127.0.0.9")
    assert [r.levelno for r in caplog.records] == [logging.WARNING] * 2
    assert caplog.records[1].getMessage() == (
        "connection refused: 1000 times in the last 0.2 s, lately from 127.0.0.9"
    )


def test_level_is_the_callers(caplog: pytest.LogCaptureFixture) -> None:
    throttled = ThrottledLog(logging.getLogger("tests.throttled"), level=logging.INFO)
    with caplog.at_level(logging.INFO, logger="tests.throttled"):
        throttled.log("closed: nothing sent", "127.0.0.2")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "closed: nothing sent: 127.0.0.2")
    ]
