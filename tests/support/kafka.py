"""A real Kafka broker (4.4, KRaft: broker and controller in one JVM) for the broker
publisher's tests, run from the jars that tests/support/kafka-broker/install.sh copies from
Maven Central into a cache outside the repository (`make kafka`; .ci/run runs it).

Without Java or the jars the tests that need the broker skip, and fail in CI. It listens on
free loopback ports with its log in a folder of the test session; `stop` and `start` again
keep the folder (a broker that was down and is back), `pause` and `resume` freeze it
(SIGSTOP: connections stay open, nothing is answered). Besides plain TCP it listens with
SASL (PLAIN, user `SASL_USER`) over TLS (a certificate of a CA made for the session, `ca`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from cryptography.hazmat.primitives import serialization

from tests.support.certificates import make_pki
from tests.support.server import free_port

JARS = Path(os.environ.get("PACS_KAFKA_JARS", Path.home() / ".cache/pacs/kafka-4.4.0"))
SETUP_HINT = "run `make kafka` (it copies Kafka's jars from Maven Central; needs java and mvn)"
# A small heap and a quick start: the JIT's first tier only, the serial collector.
JVM_OPTIONS = ["-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto"]
START_TIMEOUT = 90.0
SASL_USER = ("pacs", "pacs-secret")


def require_kafka() -> tuple[str, Path]:
    """Java and the broker's jars; skip without them, fail in CI (which installs them)."""
    java = shutil.which("java")
    message = None
    if java is None:
        message = "Java is required for the Kafka broker: apt-get install openjdk-17-jre-headless"
    elif not (JARS / ".complete").exists():
        message = f"Kafka's jars are missing in {JARS}: {SETUP_HINT}"
    if message is None and java is not None:
        return java, JARS
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


class KafkaBroker:
    def __init__(self, java: str, jars: Path, folder: Path) -> None:
        self.java = java
        self.jars = jars
        self.folder = folder
        self.port = free_port()
        self.controller_port = free_port()
        self.sasl_port = free_port()
        (folder / "pki").mkdir()
        pki = make_pki(folder / "pki", "127.0.0.1")
        self.ca = pki.ca
        # Kafka reads a PEM key store: the key in PKCS#8, then the certificate.
        key = serialization.load_pem_private_key(pki.key.read_bytes(), None)
        self._keystore = folder / "pki" / "keystore.pem"
        self._keystore.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            + pki.cert.read_bytes()
        )
        self.process: subprocess.Popen[bytes] | None = None
        self._log = folder / "broker.log"
        self._config = folder / "server.properties"
        self._config.write_text(self._properties())
        self._run_tool("format", "-t", self._cluster_id(), "-c", str(self._config), "--standalone")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap(self) -> str:
        """The listener that wants TLS and a SASL PLAIN sign-in (`SASL_USER`)."""
        return f"127.0.0.1:{self.sasl_port}"

    def start(self) -> None:
        command = [
            self.java, *JVM_OPTIONS, "-cp", f"{self.jars}/*", "kafka.Kafka", str(self._config)
        ]  # fmt: skip
        with self._log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while not asyncio.run(_answers(self.bootstrap)):
            if self.process.poll() is not None:
                raise RuntimeError(f"the Kafka broker exited:\n{self._log.read_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the Kafka broker is not ready in {START_TIMEOUT} s")
            time.sleep(0.2)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGCONT)  # a paused broker cannot stop
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def _properties(self) -> str:
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                f"CONTROLLER://127.0.0.1:{self.controller_port},"
                f"SASL_SSL://127.0.0.1:{self.sasl_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port},"
                f"SASL_SSL://127.0.0.1:{self.sasl_port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map="
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
                "sasl.enabled.mechanisms=PLAIN",
                "listener.name.sasl_ssl.plain.sasl.jaas.config="
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'user_{SASL_USER[0]}="{SASL_USER[1]}";',
                "listener.name.sasl_ssl.ssl.keystore.type=PEM",
                f"listener.name.sasl_ssl.ssl.keystore.location={self._keystore}",
                f"log.dirs={self.folder / 'logs'}",
                "num.partitions=3",
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "",
            ]
        )

    def _cluster_id(self) -> str:
        return self._run_tool("random-uuid").strip().splitlines()[-1]

    def _run_tool(self, *args: str) -> str:
        command = [self.java, *JVM_OPTIONS, "-cp", f"{self.jars}/*", "kafka.tools.StorageTool"]
        done = subprocess.run(
            [*command, *args], capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"kafka StorageTool {args[0]} failed:\n{done.stdout}{done.stderr}")
        return done.stdout


async def _answers(bootstrap: str) -> bool:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await producer.start()
    except KafkaError:
        return False
    finally:
        await producer.stop()
    return True


@contextmanager
def running_kafka(folder: Path) -> Iterator[KafkaBroker]:
    """A broker with its data in `folder`, started; stopped (killed if need be) at the end."""
    java, jars = require_kafka()
    folder.mkdir(parents=True, exist_ok=True)
    broker = KafkaBroker(java, jars, folder)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
