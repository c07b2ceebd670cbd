"""ThumbnailCache: least recently used entries go first, within the byte budget."""

from __future__ import annotations

import pytest

from app.services.thumbnail_cache import ThumbnailCache
from app.settings import Settings


def test_least_recently_used_goes_first_within_the_budget() -> None:
    cache = ThumbnailCache(max_bytes=10)
    cache.put("a", b"aaaa")
    cache.put("b", b"bbbb")
    assert cache.get("a") == b"aaaa"  # "a" is now the most recently used
    cache.put("c", b"cccc")
    assert cache.get("b") is None
    assert (cache.get("a"), cache.get("c")) == (b"aaaa", b"cccc")
    assert (len(cache), cache.size_bytes) == (2, 8)


def test_replacing_an_entry_counts_its_bytes_once() -> None:
    cache = ThumbnailCache(max_bytes=10)
    cache.put("a", b"aaaaaa")
    cache.put("a", b"aaaaaaaa")
    assert (len(cache), cache.size_bytes, cache.get("a")) == (1, 8, b"aaaaaaaa")


@pytest.mark.parametrize("budget", [0, 3])
def test_an_image_larger_than_the_budget_is_not_kept(budget: int) -> None:
    cache = ThumbnailCache(max_bytes=budget)
    cache.put("small", b"ab"[:budget])
    cache.put("big", b"abcd")
    assert cache.get("big") is None
    assert cache.size_bytes <= budget


def test_setting_refuses_a_negative_budget() -> None:
    with pytest.raises(ValueError, match="PACS_THUMBNAIL_CACHE_BYTES"):
        Settings.from_env({"PACS_THUMBNAIL_CACHE_BYTES": "-1"})
    assert Settings.from_env({"PACS_THUMBNAIL_CACHE_BYTES": "0"}).thumbnail_cache_bytes == 0
