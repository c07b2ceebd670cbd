"""A live server per index backend for the HTTP fuzz targets, and the suite's figures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conformance.helpers import reuid_testdata, stored, stow_ok, token
from tests.fuzz.budget import REPORT, seconds
from tests.fuzz.live import Served
from tests.support.postgres import index_backend_env
from tests.support.server import running_server

# What the server holds before fuzzing: a multi-frame MR (10 frames of 64 x 64), a CT and
# an encapsulated (JPEG lossless) colour image, so that frames, rendering and transcoding
# reach real pixel data.
SAMPLES = ("emri_small.dcm", "CT_small.dcm", "SC_rgb_jpeg_gdcm.dcm")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.fuzz)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.section(f"fuzzing ({seconds():g} s per target)")
        for figures in REPORT:
            terminalreporter.write_line(figures.line())


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def archive(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """A server on each index backend, with the samples stored."""
    data: Path = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    with index_backend_env(request.param) as env, running_server(data, env=env) as url:
        samples = [stored(reuid_testdata(name, PatientID=token())[0]) for name in SAMPLES]
        with httpx.Client(base_url=f"{url}/dicomweb", timeout=60) as http:
            stow_ok(http, [s.data for s in samples])
        yield Served(request.param, url, samples, data / "server.log")
