"""The webhook settings are checked at start: timeouts, attempts and the refresh interval are
at least 1 (0 would time every POST out, dead-letter at once, or spin)."""

from __future__ import annotations

import pytest

from app.settings import Settings


@pytest.mark.parametrize(
    "name", ["PACS_WEBHOOK_TIMEOUT", "PACS_WEBHOOK_MAX_ATTEMPTS", "PACS_WEBHOOK_REFRESH_MS"]
)
def test_webhook_settings_are_at_least_one(name: str) -> None:
    with pytest.raises(ValueError, match=f"{name}: must be at least 1"):
        Settings.from_env({name: "0"})


def test_defaults() -> None:
    default = Settings.from_env({})
    assert (default.webhook_timeout, default.webhook_max_attempts) == (10, 8)
    assert default.webhook_refresh_ms == 2000
