"""A flood of idle connections never locks out real clients (issue 10).

5,000 idle HTTP connections (half that never finish their request headers, half idle on
keep-alive after a request) and 300 idle DICOM connections that never send an
A-ASSOCIATE-RQ are held from 127.0.0.2 and up, spread so that no per-address cap is reached,
and with the header, keep-alive and ARTIM timeouts longer than the test: what keeps the
archive serving is the budgets, not a timeout closing the flood. Meanwhile `/health` answers
within 100 ms (p99 of 200 requests), and a real curl and storescu from 127.0.0.1 succeed.

The server starts with a soft open-file limit of 1024, as under systemd, and must raise it
itself to hold the flood.
"""

from __future__ import annotations

import resource
import socket
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tests.support import flood
from tests.support.dcmtk import require_dcmtk
from tests.support.dicom_factory import make_file
from tests.support.server import PIDS, free_port, peak_rss_bytes, running_server

HEADERLESS = 2500
KEEP_ALIVE = 2500
DIMSE_IDLE = 300
# 50 connections per address (the default per-address HTTP cap is 256); 5 per address on
# DIMSE (default cap 10).
HTTP_PER_ADDRESS = 50
DIMSE_PER_ADDRESS = 5
LONG = "600"  # seconds: no timeout fires during the test


def test_idle_connection_flood_leaves_health_curl_and_storescu_served(tmp_path: Path) -> None:
    require_dcmtk()
    flood.raise_open_file_limit(HEADERLESS + KEEP_ALIVE + DIMSE_IDLE + 1000)
    dimse_port = free_port()
    env = {
        "PACS_HTTP_HEADER_TIMEOUT": LONG,
        "PACS_HTTP_KEEPALIVE_TIMEOUT": LONG,
        "PACS_DIMSE_REQUEST_TIMEOUT": LONG,
    }
    with ExitStack() as stack:
        with soft_open_file_limit(1024):  # what the server inherits
            url = stack.enter_context(
                running_server(tmp_path / "data", "--dimse-port", str(dimse_port), env=env)
            )
        held: list[socket.socket] = []
        stack.callback(lambda: flood.close_all(held))
        port = int(url.rsplit(":", 1)[1])
        addresses = iter(flood.loopback_addresses(2, 500))

        def sources(count: int, per_address: int) -> list[str]:
            return [next(addresses) for _ in range(count // per_address)]

        headerless = flood.connect(port, sources(HEADERLESS, HTTP_PER_ADDRESS), HTTP_PER_ADDRESS)
        for sock in headerless:
            sock.send(flood.PARTIAL_REQUEST)
        keep_alive = flood.connect(port, sources(KEEP_ALIVE, HTTP_PER_ADDRESS), HTTP_PER_ADDRESS)
        answered = flood.request_all(keep_alive)
        dimse = flood.connect(dimse_port, sources(DIMSE_IDLE, DIMSE_PER_ADDRESS), DIMSE_PER_ADDRESS)
        held = headerless + keep_alive + dimse

        latencies = flood.health_latencies(port, 200)
        p50, p99 = flood.percentiles(latencies)
        slowest = sorted(round(t * 1000) for t in latencies)[-4:]
        print(f"/health p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, slowest {slowest} ms")
        curl = subprocess.run(
            ["curl", "-sS", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", f"{url}/health"],
            capture_output=True,
            text=True,
            check=False,
        )
        sample = tmp_path / "ct.dcm"
        sample.write_bytes(make_file())
        store = storescu(sample, dimse_port)
        open_now = (
            flood.still_open(headerless),
            flood.still_open(keep_alive),
            flood.still_open(dimse),
        )
        descriptors = len(list(Path(f"/proc/{PIDS[url]}/fd").iterdir()))
        print(
            f"connected {(len(headerless), answered, len(dimse))}, held {open_now} "
            f"(headerless, keep-alive, DIMSE); server fds {descriptors}, "
            f"peak RSS {peak_rss_bytes(url) // 2**20} MiB"
        )

        assert (len(headerless), answered, len(dimse)) == (HEADERLESS, KEEP_ALIVE, DIMSE_IDLE)
        assert open_now == (HEADERLESS, KEEP_ALIVE, DIMSE_IDLE), "the flood was not held"
        assert descriptors > HEADERLESS + KEEP_ALIVE + DIMSE_IDLE
        assert len(latencies) == 200 and p99 < 0.1, f"p50 {p50:.3f} s, p99 {p99:.3f} s"
        assert curl.stdout == "200", curl.stderr
        assert store == "", store


def storescu(sample: Path, port: int) -> str:
    """What went wrong sending `sample` with storescu from 127.0.0.1 (empty: nothing)."""
    command = ["storescu", "-aet", "MODALITY", "-aec", "PACS", "127.0.0.1", str(port)]
    try:
        done = subprocess.run(
            [*command, str(sample)], capture_output=True, text=True, timeout=30, check=False
        )
    except subprocess.TimeoutExpired:
        return "storescu: no answer within 30 s"
    return "" if done.returncode == 0 else f"storescu failed: {done.stdout}{done.stderr}"


@contextmanager
def soft_open_file_limit(limit: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
