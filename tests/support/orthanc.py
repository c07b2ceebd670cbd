"""Debian's Orthanc with its DICOMweb plugin, run by a test as a process of its own.

Each Orthanc gets its own configuration, storage and index in a folder of the test, a free
HTTP port and no DICOM listener, and is stopped (terminate, then kill) when the context
exits. The configuration mirrors load-tests/servers.py's `orthanc_config` (that folder is
not importable from here), plus the DICOMweb servers Orthanc may send to.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.processes import background_process
from tests.support.server import free_port

# Where Debian's orthanc and orthanc-dicomweb put them (`dpkg -L`).
BINARY = "Orthanc"
PLUGIN_PATTERNS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so*",
)


PORT_ATTEMPTS = 3


def _plugin() -> str | None:
    return next((p for pattern in PLUGIN_PATTERNS for p in sorted(glob.glob(pattern))), None)


def require_orthanc() -> tuple[str, str]:
    """Orthanc's binary and DICOMweb plugin; skip without them, fail in CI (.ci/run installs
    them)."""
    binary = shutil.which(BINARY) or shutil.which(BINARY, path="/usr/sbin:/usr/bin")
    plugin = _plugin()
    if binary and plugin:
        return binary, plugin
    message = (
        "Orthanc and its DICOMweb plugin are required: apt-get install orthanc orthanc-dicomweb"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def running_orthanc(work: Path, dicomweb_servers: Mapping[str, str]) -> Iterator[str]:
    """Start Orthanc with its data in `work`; `dicomweb_servers` names the DICOMweb roots it
    may send to (`/dicom-web/servers/{name}/...`). Yields its base URL."""
    binary, plugin = require_orthanc()
    work.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        for attempt in range(PORT_ATTEMPTS):
            port = free_port()
            path = work / "orthanc.json"
            path.write_text(json.dumps(_config(work, port, plugin, dicomweb_servers), indent=2))
            url = f"http://127.0.0.1:{port}"
            log = work / "orthanc.log"
            try:
                stack.enter_context(
                    background_process(
                        [binary, str(path)], log, lambda url=url: _answers(f"{url}/system")
                    )
                )
            except RuntimeError:
                # The free port was taken by another process before Orthanc bound it.
                if "already in use" not in log.read_text() or attempt == PORT_ATTEMPTS - 1:
                    raise
                continue
            break
        yield url


def _config(
    work: Path, port: int, plugin: str, dicomweb_servers: Mapping[str, str]
) -> dict[str, object]:
    return {
        "Name": "orthanc-under-test",
        "HttpPort": port,
        "DicomServerEnabled": False,
        "StorageDirectory": str(work / "storage"),
        "IndexDirectory": str(work / "index"),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "StorageCompression": False,
        "Plugins": [plugin],
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "Servers": {name: [url] for name, url in dicomweb_servers.items()},
        },
    }
