"""The search settings are checked at start: PACS_SEARCH_URL an http(s) URL with a host (the
message does not repeat it: it may hold a password), PACS_SEARCH_INDEX a valid prefix of
Elasticsearch index names."""

from __future__ import annotations

import pytest

from app.settings import Settings


@pytest.mark.parametrize(
    "url", ["localhost:9200", "ftp://es:9200", "http://", "http://es:port", "https://:9200"]
)
def test_a_search_url_that_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="PACS_SEARCH_URL: not an http") as raised:
        Settings.from_env({"PACS_SEARCH_URL": url})
    assert url not in str(raised.value) or url == "http://"


@pytest.mark.parametrize("url", ["http://127.0.0.1:9200", "https://user:secret@es.example:443"])
def test_a_search_url_is_accepted(url: str) -> None:
    assert Settings.from_env({"PACS_SEARCH_URL": url}).search_url == url


@pytest.mark.parametrize("prefix", ["", "Pacs", "-pacs", "_pacs", "pa cs", "p/x", "a" * 201])
def test_an_index_prefix_elasticsearch_refuses_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="PACS_SEARCH_INDEX"):
        Settings.from_env({"PACS_SEARCH_INDEX": prefix})


def test_defaults() -> None:
    default = Settings.from_env({})
    assert (default.search_url, default.search_index) == ("", "pacs")
