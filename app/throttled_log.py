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
        self._last = -interval
        self._held: Counter[str] = Counter()
        self._latest: dict[str, str] = {}

    def log(self, message: str, address: str) -> None:
        """Log `message` (from `address`) now, or count it and log the tally once the
        interval has passed (on the next event after it: no timer)."""
        with self._lock:
            self._held[message] += 1
            self._latest[message] = address
            now = time.monotonic()
            if now - self._last < self._interval:
                return
            self._last = now
            held, latest = self._held, self._latest
            self._held, self._latest = Counter(), {}
        for text, count in held.items():
            if count == 1:
                self._logger.log(self._level, "%s: %s", text, latest[text])
            else:
                self._logger.log(
                    self._level,
                    "%s: %d times in the last %g s, lately from %s",
                    text,
                    count,
                    self._interval,
                    latest[text],
                )
