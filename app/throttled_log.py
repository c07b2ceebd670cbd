"""A log line for events that can come in floods (connections refused by a cap): the first
one is logged at once, the rest are counted and summed up at most once per interval, so a
flood of a million connections is a few lines, not a million."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter


class ThrottledLog:
    def __init__(
        self, logger: logging.Logger, interval: float = 10.0, level: int = logging.WARNING
    ) -> None:
        self._logger = logger
        self._level = level
        self._interval = interval
        self._lock = threading.Lock()  # DIMSE refuses connections from several threads
        # By message: when it was last logged, how often it came since, lately from where.
        self._last: dict[str, float] = {}
        self._held: Counter[str] = Counter()
        self._latest: dict[str, str] = {}

    def log(self, message: str, address: str) -> None:
        """Log `message` (from `address`) now, or count it and log the tally once the
        interval has passed since it was last logged (on its next event: no timer)."""
        with self._lock:
            self._held[message] += 1
            self._latest[message] = address
            now = time.monotonic()
            if now - self._last.get(message, -self._interval) < self._interval:
                return
            self._last[message] = now
            count = self._held.pop(message)
            latest = self._latest.pop(message)
        if count == 1:
            self._logger.log(self._level, "%s: %s", message, latest)
        else:
            self._logger.log(
                self._level,
                "%s: %d times in the last %g s, lately from %s",
                message,
                count,
                self._interval,
                latest,
            )
