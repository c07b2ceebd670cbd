"""Debian's rsyslog as the audit collector of the tests: UDP (RFC 5426) and TLS (RFC 5425,
gtls network stream driver) inputs on free ports, every message received written to a
file, one line each: the input that took it and the message as received."""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.certificates import Pki, make_pki
from tests.support.processes import background_process
from tests.support.server import free_port

_CONFIG = """
global(
    workDirectory="{work}"
    maxMessageSize="64k"
    defaultNetstreamDriver="gtls"
    defaultNetstreamDriverCAFile="{ca}"
    defaultNetstreamDriverCertFile="{cert}"
    defaultNetstreamDriverKeyFile="{key}"
)
module(load="imudp")
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
template(name="received" type="string" string="%inputname% %rawmsg%\\n")
ruleset(name="audit") {{
    action(type="omfile" file="{received}" template="received")
}}
input(type="imudp" address="127.0.0.1" port="{udp_port}" ruleset="audit")
input(type="imtcp" address="127.0.0.1" port="{tls_port}" ruleset="audit")
"""


@dataclass(frozen=True)
class Collector:
    udp_port: int
    tls_port: int
    pki: Pki
    received: Path

    @property
    def udp_url(self) -> str:
        return f"udp://127.0.0.1:{self.udp_port}"

    @property
    def tls_url(self) -> str:
        return f"tls://localhost:{self.tls_port}"

    def lines(self) -> list[bytes]:
        return self.received.read_bytes().splitlines() if self.received.exists() else []

    def wait_for(self, count: int, timeout: float = 15) -> list[bytes]:
        """The received lines, once there are at least `count` of them."""
        deadline = time.monotonic() + timeout
        while len(found := self.lines()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"rsyslog received {len(found)} of {count} messages")
            time.sleep(0.05)
        return found


def rsyslogd() -> str:
    """The rsyslogd binary; a skip outside CI when it or its gtls driver is missing, a
    failure in CI (where .ci/run installs them)."""
    path = shutil.which("rsyslogd", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if path and any(Path("/usr/lib").glob("*/rsyslog/lmnsd_gtls.so")):
        return path
    message = "rsyslog and its gtls driver are missing (apt-get install rsyslog rsyslog-gnutls)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _udp_bound(port: int) -> bool:
    """Whether something listens on UDP 127.0.0.1:`port` (from /proc/net/udp)."""
    wanted = f"0100007F:{port:04X}"
    lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    return any(line.split()[1] == wanted for line in lines)


def _tcp_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def running_rsyslog(
    folder: Path, *, tls_port: int | None = None, pki: Pki | None = None
) -> Iterator[Collector]:
    """rsyslogd with its inputs on free ports (or the TLS port given), its certificate
    from `pki` (or a new CA); stopped afterwards."""
    binary = rsyslogd()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "work").mkdir(exist_ok=True)
    pki = pki or make_pki(folder / "pki")
    collector = Collector(free_udp_port(), tls_port or free_port(), pki, folder / "received.log")
    config = folder / "rsyslog.conf"
    config.write_text(
        _CONFIG.format(
            work=folder / "work",
            ca=pki.ca,
            cert=pki.cert,
            key=pki.key,
            received=collector.received,
            udp_port=collector.udp_port,
            tls_port=collector.tls_port,
        )
    )
    command = [binary, "-n", "-f", str(config), "-i", str(folder / "rsyslogd.pid")]

    def ready() -> bool:
        return _udp_bound(collector.udp_port) and _tcp_accepts(collector.tls_port)

    with background_process(command, folder / "rsyslogd.log", ready):
        yield collector
