"""A real Elasticsearch node (8.19, single node, security off) for the search indexer's
tests, run from the integration-test distribution that
tests/support/elasticsearch-node/install.sh unpacks from Maven Central into a cache outside
the repository (`make elasticsearch`; .ci/run runs it) with the machine's Java 17.

Without Java or the distribution the tests that need it skip, and fail in CI. It listens on
free loopback ports with its data in a folder of its own; `stop` and `start` again keep the
folder (a node that was down and is back).

Elasticsearch refuses to run as root: as root (CI, this workplace) the node runs as
`nobody`, from a hard-linked copy of the distribution in a world-readable temporary folder
(the cache lives under /root, which nobody cannot read).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest

from tests.support.server import free_port

HOME = Path(
    os.environ.get("PACS_ELASTICSEARCH_HOME", Path.home() / ".cache/pacs/elasticsearch-8.19.21")
)
SETUP_HINT = (
    "run `make elasticsearch` (it fetches Elasticsearch from Maven Central; needs java and mvn)"
)
# A small heap and a quick start: the JIT's first tier only, the serial collector (replacing
# the G1 of the distribution's jvm.options: two collectors make the JVM refuse to start).
JVM_OPTIONS = "-Xms256m -Xmx512m -XX:TieredStopAtLevel=1 -Xshare:auto"
START_TIMEOUT = 120.0


def require_elasticsearch() -> tuple[Path, Path]:
    """The Java home and the distribution; skip without them, fail in CI (which installs
    them)."""
    java = shutil.which("java")
    message = ""
    if java is None:
        message = "Java is required for Elasticsearch: apt-get install openjdk-17-jre-headless"
    elif not (HOME / ".complete").exists():
        message = f"Elasticsearch is missing in {HOME}: {SETUP_HINT}"
    if not message and java is not None:
        return Path(java).resolve().parent.parent, HOME
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


class ElasticsearchNode:
    def __init__(self, java_home: Path, home: Path, folder: Path) -> None:
        self.java_home = java_home
        self.folder = folder
        self.port = free_port()
        self.transport_port = free_port()
        self.as_nobody = os.geteuid() == 0
        self.home = home
        if self.as_nobody:
            self.home = folder / "home"
            _link_tree(home, self.home)
        self.config = folder / "config"
        shutil.copytree(home / "config", self.config)
        options = self.config / "jvm.options"
        options.write_text(
            options.read_text()
            .replace("-XX:+UseG1GC", "-XX:+UseSerialGC")
            .replace("-Xlog:gc*", "# -Xlog:gc*")
        )
        with (self.config / "elasticsearch.yml").open("a") as yml:
            yml.write(self._settings())
        for sub in ("data", "logs", "tmp"):
            (folder / sub).mkdir(exist_ok=True)
        if self.as_nobody:
            for path in (self.config, folder / "data", folder / "logs", folder / "tmp"):
                _chown_tree(path, "nobody")
        self.process: subprocess.Popen[bytes] | None = None
        self._log = folder / "node.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [str(self.home / "bin/elasticsearch"), "-q"]
        if self.as_nobody:
            command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "ES_JAVA_HOME": str(self.java_home),
            "ES_PATH_CONF": str(self.config),
            "ES_JAVA_OPTS": JVM_OPTIONS,
            "ES_TMPDIR": str(self.folder / "tmp"),
            "HOME": str(self.folder),
        }
        with self._log.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"Elasticsearch exited:\n{self._log.read_text()[-5000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Elasticsearch is not ready in {START_TIMEOUT} s")
            time.sleep(0.3)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        # The launcher runs the server in a child JVM: end the whole process group.
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        # The server JVM may outlive the launcher for a moment.
        deadline = time.monotonic() + 30
        while self._answers() and time.monotonic() < deadline:
            time.sleep(0.2)
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    def _answers(self) -> bool:
        try:
            response = httpx.get(f"{self.url}/_cluster/health", params={"timeout": "1s"}, timeout=2)
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and response.json()["status"] in ("green", "yellow")

    def _settings(self) -> str:
        return "\n".join(
            [
                "",
                "cluster.name: pacs-test",
                "node.name: pacs-test",
                f"path.data: {self.folder / 'data'}",
                f"path.logs: {self.folder / 'logs'}",
                "network.host: 127.0.0.1",
                f"http.port: {self.port}",
                f"transport.port: {self.transport_port}",
                "discovery.type: single-node",
                # A test node: no TLS, no users (the README says what production sets).
                "xpack.security.enabled: false",
                # A busy CI disk must not turn the indices read-only.
                "cluster.routing.allocation.disk.threshold_enabled: false",
                "action.destructive_requires_name: false",
                "",
            ]
        )


def _link_tree(source: Path, target: Path) -> None:
    """`source` copied to `target` as hard links where the file system allows (instant),
    else as copies."""
    try:
        shutil.copytree(source, target, copy_function=os.link, symlinks=True)
    except OSError:
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, symlinks=True)


def _chown_tree(root: Path, user: str) -> None:
    shutil.chown(root, user)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            shutil.chown(Path(folder) / name, user)


@contextmanager
def running_elasticsearch() -> Iterator[ElasticsearchNode]:
    """A node with its data in a folder of its own, started; stopped (killed if need be) and
    the folder removed at the end."""
    java_home, home = require_elasticsearch()
    folder = Path(tempfile.mkdtemp(prefix="pacs-elasticsearch-"))
    folder.chmod(0o755)  # readable by `nobody`, who runs the node when we are root
    try:
        node = ElasticsearchNode(java_home, home, folder)
        node.start()
        try:
            yield node
        finally:
            node.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
