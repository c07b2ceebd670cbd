"""The fuzzing suite's time budget, and running a hypothesis test until it is spent.

Each target gets `seconds()` of wall time (PACS_FUZZ_SECONDS, default below: what CI runs;
raise it for a long run). Hypothesis has no time limit of its own, so a target runs its
`@given` function in small batches, each a fresh hypothesis run with new random examples,
until the budget is spent; the batch that passes the deadline is the last.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import HealthCheck, Phase, settings

ENV = "PACS_FUZZ_SECONDS"
# Per target: 2 index backends x 5 HTTP targets + 2 parser targets, under a minute in CI.
DEFAULT_SECONDS = 3.0
BATCH = 20  # examples per hypothesis run; small, so the budget is overrun by one batch at most


def seconds() -> float:
    """The time budget of one target, in seconds."""
    value = os.environ.get(ENV, "")
    return float(value) if value else DEFAULT_SECONDS


def batch_settings(examples: int = BATCH) -> settings:
    """Settings for one batch: no deadline (a request's timeout is its own check), no
    example database (failures are kept as @example regressions instead), and no health
    check that a slow live server would trip."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        # Hypothesis's CI profile (chosen when CI is set) derandomizes: every batch would
        # then draw the same examples.
        derandomize=False,
        # Not the explain phase: it traces every line a failing case ran, which is slow.
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@dataclass
class Figures:
    """What a target did with its budget (printed in the terminal summary)."""

    target: str
    examples: int = 0
    requests: int = 0
    seconds: float = 0.0
    unit: str = "requests"  # what `requests` counts

    def line(self) -> str:
        rate = self.requests / self.seconds if self.seconds else 0.0
        return (
            f"{self.target}: {self.examples} examples, {self.requests} {self.unit} "
            f"in {self.seconds:.1f} s ({rate:.0f} {self.unit}/s)"
        )


# Every target's figures, for the terminal summary (tests/fuzz/conftest.py).
REPORT: list[Figures] = []


def spend(figures: Figures, run_batch: Callable[[], None], budget: float | None = None) -> None:
    """Call `run_batch` (a @given test with `batch_settings`) until `budget` seconds pass."""
    budget = seconds() if budget is None else budget
    start = time.monotonic()
    try:
        while True:
            run_batch()
            if time.monotonic() - start >= budget:
                break
    finally:
        figures.seconds = time.monotonic() - start
        REPORT.append(figures)
