"""What `pacs serve` hands uvicorn, checked on uvicorn's own Config."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette

from app.cli import uvicorn_options
from app.settings import Settings
from app.tls import https_context
from tests.support.certificates import make_pki


def test_https_is_served_with_the_apps_own_context(tmp_path: Path) -> None:
    """Regression: uvicorn built a second context from the certificate files, with its own
    defaults, while the app's context (TLS 1.2 minimum, as DICOM TLS) only checked them."""
    pki = make_pki(tmp_path)
    settings = Settings(tls_cert=str(pki.cert), tls_key=str(pki.key), tls_ca=str(pki.ca))
    context = https_context(settings.tls_cert, settings.tls_key, settings.tls_ca)
    config = uvicorn.Config(Starlette(), **uvicorn_options(settings, context))
    config.load()
    assert config.is_ssl and config.ssl is context
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED  # with PACS_TLS_CA, as uvicorn did


def test_plain_http_without_a_context() -> None:
    config = uvicorn.Config(Starlette(), **uvicorn_options(Settings(), None))
    config.load()
    assert not config.is_ssl and config.ssl is None
    assert config.proxy_headers is False


def test_each_http_worker_gets_its_share_of_the_connection_budgets() -> None:
    settings = Settings(http_workers=3, http_max_connections=10, http_max_connections_per_address=4)
    limits = uvicorn_options(settings, None)["http"].LIMITS
    assert (limits.total, limits.per_address) == (4, 2)  # rounded up


def test_http_workers_default_to_one_per_usable_core() -> None:
    assert Settings().http_worker_count == len(os.sched_getaffinity(0))
    assert Settings(http_workers=1).http_worker_count == 1


def test_a_negative_number_of_http_workers_is_refused() -> None:
    with pytest.raises(ValueError, match="PACS_HTTP_WORKERS"):
        Settings.from_env({"PACS_HTTP_WORKERS": "-1"})
