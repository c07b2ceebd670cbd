from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.elasticsearch import ElasticsearchNode, running_elasticsearch
from tests.support.kafka import KafkaBroker, running_kafka
from tests.support.oidc import OpenIdProvider, running_provider
from tests.support.server import running_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of one archive shared by the session's HTTP tests (use fresh UIDs)."""
    with running_server(tmp_path_factory.mktemp("archive")) as url:
        yield url


@pytest.fixture(scope="session")
def dicomweb(server: str) -> str:
    return f"{server}/dicomweb"


@pytest.fixture
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server}/dicomweb", timeout=60) as client:
        yield client


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenIdProvider]:
    """A real OpenID Provider (tests/support/oidc.py) shared by the session: rotate its key
    only with retire=False here; a test that retires keys starts its own provider."""
    with running_provider(tmp_path_factory.mktemp("oidc")) as provider:
        yield provider


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A real Kafka broker (tests/support/kafka.py) shared by the session, started once (it
    takes seconds); a test that stops or pauses it starts or resumes it before it ends, and
    uses a topic of its own."""
    with running_kafka(tmp_path_factory.mktemp("kafka")) as broker:
        yield broker


@pytest.fixture(scope="session")
def elasticsearch() -> Iterator[ElasticsearchNode]:
    """A real Elasticsearch node (tests/support/elasticsearch.py) shared by the session,
    started once (about 20 s); a test that stops it starts it again before it ends, and uses
    an index prefix of its own."""
    with running_elasticsearch() as node:
        yield node
