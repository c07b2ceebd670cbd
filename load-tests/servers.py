"""Start a fresh DICOMweb server for a benchmark: our `pacs serve`, or Debian's Orthanc.

Each server gets a temporary data folder and free ports, runs as a child process (its output
goes to a log file in that folder) and is stopped (SIGTERM, then SIGKILL) when the context
exits. `Server` gives the DICOMweb root, the process id and readings from /proc (peak resident
memory, CPU seconds), so benchmarks can report what the server itself used.

With `peers` (AE title -> (host, port)) both also listen for DICOM: ours on a free
`--dimse-port` with the peers as C-MOVE destinations, Orthanc on its `DicomPort` with the peers
in `DicomModalities` (which Orthanc needs both for a C-MOVE destination and to let a calling AE
use C-FIND, C-MOVE and C-GET). `Server.dimse_port` and `Server.ae_title` say where to call.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ORTHANC_BINARY = "Orthanc"
# Shipped by Debian's orthanc-dicomweb (`dpkg -L orthanc-dicomweb`).
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def busy_seconds() -> float:
    """CPU time spent by the whole machine, all CPUs, not idle (from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def own_seconds() -> float:
    """CPU time of this process (the client) and its finished children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def default_pacs() -> str:
    """`pacs` next to the running interpreter (the project's .venv), else on PATH."""
    candidate = Path(sys.executable).parent / "pacs"
    return str(candidate) if candidate.exists() else "pacs"


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, user + system CPU ticks) of a process, None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the ")" closing the command name: state is field 3, ppid 4, utime 14, stime 15.
    return int(fields[1]), int(fields[11]) + int(fields[12])


@dataclass
class Server:
    name: str
    url: str  # DICOMweb root, no trailing slash
    process: subprocess.Popen[bytes]
    data: Path
    log: Path
    dimse_port: int = 0  # 0: no DICOM listener
    ae_title: str = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def _status(self, key: str) -> int:
        """A kB field of /proc/<pid>/status, in bytes (0 once the process is gone)."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0
        for line in status.splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def peak_rss(self) -> int:
        """Peak resident memory so far (VmHWM), bytes."""
        return self._status("VmHWM")

    def rss(self) -> int:
        return self._status("VmRSS")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process (all its threads) and of its child
        processes still running (`pacs serve`'s HTTP workers) so far."""
        own = _stat(self.pid)
        if own is None:
            return float("nan")
        total = own[1]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and (child := _stat(int(entry.name))) and child[0] == self.pid:
                total += child[1]
        return total / CLOCK_TICKS

    def stored_bytes(self) -> int:
        """Bytes of files under the data folder (blobs, index, logs)."""
        return sum(p.stat().st_size for p in self.data.rglob("*") if p.is_file())

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait()


def _wait_ready(server: Server, probe: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited at start:\n{server.log.read_text()[-4000:]}")
        try:
            if httpx.get(probe, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} not ready in {timeout:.0f} s ({probe})")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def _workdir(prefix: str, keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


Peers = Mapping[str, tuple[str, int]]  # AE title -> (host, port)

PACS_AE_TITLE = "PACS"
ORTHANC_AE_TITLE = "ORTHANC"  # Orthanc's default DicomAet


@contextmanager
def pacs_server(
    pacs: str | None = None,
    keep: bool = False,
    env: Mapping[str, str] | None = None,
    peers: Peers | None = None,
) -> Iterator[Server]:
    """A fresh `pacs serve` with its default SQLite index and folder storage; `env` adds
    PACS_* settings to this process's environment (e.g. sign-in). Without `peers` DIMSE is off;
    with them (even empty) it listens on a free port and may C-MOVE to each peer."""
    with _workdir("bench-pacs-", keep) as work:
        port = free_port()
        dimse_port = free_port() if peers is not None else 0
        data = work / "data"
        log = work / "server.log"
        command = [
            pacs or default_pacs(),
            "serve",
            "--port",
            str(port),
            "--data",
            str(data),
            "--dimse-port",
            str(dimse_port),
            "--ae-title",
            PACS_AE_TITLE,
        ]
        for ae, (host, peer_port) in (peers or {}).items():
            command += ["--move-destination", f"{ae}={host}:{peer_port}"]
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
            )
        server = Server(
            "ours",
            f"http://127.0.0.1:{port}/dicomweb",
            process,
            data,
            log,
            dimse_port,
            PACS_AE_TITLE if dimse_port else "",
        )
        try:
            _wait_ready(server, f"http://127.0.0.1:{port}/health", 60)
            yield server
        finally:
            _stop(process)


def orthanc_config(
    work: Path, http_port: int, dicom_port: int, plugin: str, peers: Peers | None = None
) -> dict[str, object]:
    """Minimal configuration: everything not listed keeps Orthanc's built-in default. `peers`
    become `DicomModalities` (only when given, so the DICOMweb benchmarks keep their config)."""
    modalities = {ae: [ae, host, port] for ae, (host, port) in (peers or {}).items()}
    return {
        **({"DicomModalities": modalities} if peers else {}),
        "Name": "bench",
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "StorageDirectory": str(work / "storage"),
        "IndexDirectory": str(work / "index"),
        "RemoteAccessAllowed": True,
        "AuthenticationEnabled": False,
        "StorageCompression": False,
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }


@contextmanager
def orthanc_server(
    binary: str = ORTHANC_BINARY,
    plugin: str = DICOMWEB_PLUGIN,
    keep: bool = False,
    peers: Peers | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[Server]:
    """A fresh Orthanc with the DICOMweb plugin, SQLite index and folder storage in a temp dir;
    its DICOM port (always open, as Orthanc's default) knows `peers` as modalities; `env` adds
    to its environment (e.g. DCMTK's TCP_NODELAY)."""
    if shutil.which(binary) is None and not Path(binary).exists():
        raise RuntimeError(f"{binary} not found: apt-get install orthanc orthanc-dicomweb")
    if not Path(plugin).exists():
        raise RuntimeError(f"{plugin} not found: apt-get install orthanc-dicomweb")
    with _workdir("bench-orthanc-", keep) as work:
        http_port, dicom_port = free_port(), free_port()
        config = work / "orthanc.json"
        config.write_text(
            json.dumps(orthanc_config(work, http_port, dicom_port, plugin, peers), indent=2)
        )
        log = work / "server.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [binary, str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=work,
                env={**os.environ, **(env or {})},
            )
        root = f"http://127.0.0.1:{http_port}"
        server = Server(
            "Orthanc", f"{root}/dicom-web", process, work, log, dicom_port, ORTHANC_AE_TITLE
        )
        try:
            _wait_ready(server, f"{root}/dicom-web/studies", 60)
            yield server
        finally:
            _stop(process)


def revision() -> str:
    """The project's commit (read-only git), with "+changes" if app/ differs from it."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", "-C", str(root), *args], check=False, capture_output=True, text=True
            )
        except OSError:
            return ""
        return out.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+changes" if git("status", "--porcelain", "--", "app") else "")


def orthanc_version(binary: str = ORTHANC_BINARY) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    except OSError:
        return "not installed"
    return out.stdout.splitlines()[0] if out.stdout else "unknown"
