"""The OHIF viewer in headless Chromium as a test peer.

What the browser tests need is installed by `make browser` (tests/e2e/ohif/install.sh): Debian's
Chromium, Node.js with playwright-core (npm ci in tests/e2e/ohif) and the built OHIF viewer,
unpacked into `.cache/ohif/<version>/dist`. Here: finding those (skip when missing, fail in CI
where they are installed), serving the viewer over HTTP from a thread of the test process, and
running the node driver, which answers in JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
OHIF_DIR = ROOT / "tests" / "e2e" / "ohif"
SETUP_HINT = "run `make browser` (it installs Chromium, playwright-core and the OHIF viewer)"


def require(ok: bool, message: str) -> None:
    """Skip the calling test when a tool is missing; fail instead in CI, which installs it."""
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@dataclass(frozen=True)
class Tools:
    chromium: str
    node: str
    dist: Path  # the built viewer: index.html, bundles, wasm


def ohif_version() -> str:
    """The pinned @ohif/app version (package.json's config, shared with install.sh)."""
    package = json.loads((OHIF_DIR / "package.json").read_text())
    version: str = package["config"]["ohifVersion"]
    return version


def find_tools() -> Tools:
    """Chromium, node and the viewer, or skip (fail in CI) saying which is missing."""
    chromium = shutil.which(os.environ.get("CHROMIUM", "chromium"))
    require(chromium is not None, f"Chromium is not installed; {SETUP_HINT}")
    node = shutil.which("node")
    require(node is not None, f"Node.js is not installed; {SETUP_HINT}")
    playwright = OHIF_DIR / "node_modules" / "playwright-core" / "package.json"
    require(playwright.is_file(), f"playwright-core is not installed in {OHIF_DIR}; {SETUP_HINT}")
    dist = ROOT / ".cache" / "ohif" / ohif_version() / "dist"
    require((dist / "index.html").is_file(), f"the OHIF viewer is not in {dist}; {SETUP_HINT}")
    assert chromium is not None and node is not None
    return Tools(chromium, node, dist)


# --- the viewer's static server ----------------------------------------------------------------

# Types the browser insists on: wasm is compiled streaming only as application/wasm, and module
# scripts need a JavaScript type (Python's table varies with the system's mime.types).
_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".woff2": "font/woff2",
}


class _ViewerHandler(SimpleHTTPRequestHandler):
    """Files of the built viewer, `app-config.js` from memory, and index.html for any other path
    without a file extension: the viewer is a single-page app with history routing
    (`/viewer?StudyInstanceUIDs=...`)."""

    app_config: ClassVar[bytes] = b""  # set per server, on a subclass

    def do_GET(self) -> None:
        path = PurePosixPath(urlsplit(self.path).path)
        if path.name == "app-config.js":
            self._send_bytes(self.app_config, "text/javascript")
            return
        if not Path(self.translate_path(str(path))).exists() and not path.suffix:
            self.path = "/index.html"
        super().do_GET()

    def guess_type(self, path: str | os.PathLike[str]) -> str:
        return _TYPES.get(PurePosixPath(path).suffix) or super().guess_type(path)

    def _send_bytes(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the driver records what the browser saw


@contextmanager
def serve_viewer(dist: Path, app_config: str, port: int = 0) -> Iterator[str]:
    """Serve the viewer in `dist` with `app_config` as its app-config.js on loopback `port`
    (a free one by default; a thread of this process); yield its base URL.

    No cross-origin isolation headers (COOP/COEP): the viewer does not require it
    (cornerstone3D uses SharedArrayBuffer only where the page has it), so the archive's CORS
    headers are all that its cross-origin requests need."""
    handler = type("Handler", (_ViewerHandler,), {"app_config": app_config.encode()})
    server = ThreadingHTTPServer(("127.0.0.1", port), partial(handler, directory=str(dist)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="ohif-static", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def app_config(dicomweb_root: str, oidc: dict[str, Any] | None = None) -> str:
    """OHIF's app-config.js from the template, with its data source pointing at the archive
    and, with `oidc`, sign-in through that OpenID Connect client (OHIF's `oidc` setting)."""
    template = (OHIF_DIR / "app-config.template.js").read_text()
    config = template.replace("__DICOMWEB_ROOT__", json.dumps(dicomweb_root))
    if oidc is not None:
        config += f"window.config.oidc = [{json.dumps(oidc)}];\n"
    return config


# --- the driver --------------------------------------------------------------------------------


def run_driver(
    tools: Tools, script: str, request: dict[str, Any], *, timeout: float
) -> dict[str, Any]:
    """Run a node script of tests/e2e/ohif with `request` as JSON on its standard input; its
    JSON answer (the last line of its standard output). Its standard error (progress) is kept
    in the answer's "log" for failure messages."""
    request = {**request, "chromium": tools.chromium}
    done = subprocess.run(
        [tools.node, str(OHIF_DIR / script)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=OHIF_DIR,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, (
        f"{script} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}"
    )
    answer: dict[str, Any] = json.loads(lines[-1])
    answer["log"] = done.stderr
    return answer
