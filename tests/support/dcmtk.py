"""DCMTK's command-line tools as test peers: echoscu, storescu, findscu, movescu, getscu and a
storescp started on a free port."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.processes import background_process
from tests.support.server import free_port

TOOLS = ("echoscu", "storescu", "findscu", "movescu", "getscu", "storescp")
# DCMTK's own decoders (IJG libjpeg, its CharLS fork, its RLE codec): a second opinion on
# pixel data that the archive decodes with pylibjpeg and encodes with imagecodecs.
DECOMPRESSORS = ("dcmdjpeg", "dcmdjpls", "dcmdrle")


def require_dcmtk(tools: tuple[str, ...] = TOOLS) -> None:
    """Skip the calling test when DCMTK (`tools` of it) is missing; fail instead in CI, which
    installs it."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if not missing:
        return
    message = f"DCMTK is not installed (missing {', '.join(missing)}; apt-get install dcmtk)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def run(tool: str, *args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool; its output (stdout and stderr, in order) is in `.stdout`."""
    return subprocess.run(
        [tool, *(str(a) for a in args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def check(tool: str, *args: str | Path, timeout: float = 60) -> str:
    """Run a DCMTK tool that must succeed; its output."""
    done = run(tool, *args, timeout=timeout)
    assert done.returncode == 0, f"{tool} exited with {done.returncode}:\n{done.stdout}"
    return done.stdout


@contextmanager
def storescp(
    folder: Path,
    ae_title: str = "STORESCP",
    tls: tuple[str, ...] = (),
    syntaxes: str = "+xa",
    port: int | None = None,
) -> Iterator[int]:
    """A storescp writing what it receives to `folder` exactly as received (+B), accepting
    the transfer syntaxes `syntaxes` names (default +xa: every one it knows; +xe: the
    uncompressed ones only); yields its port. `tls`: DCMTK's TLS options
    (`+tls key cert +cf ca`), used by storescp and by the echoscu that checks it is up.
    `port`: where it listens (default: a free one)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    command = ["storescp", "+B", syntaxes, *tls, "-aet", ae_title, "-od", str(folder), str(port)]

    def answers() -> bool:
        echo = run("echoscu", *tls, "-aec", ae_title, "127.0.0.1", str(port), timeout=5)
        return echo.returncode == 0

    log = folder.parent / f"{folder.name}.storescp.log"
    with background_process(command, log, answers, timeout=10):
        yield port


def split_part10(data: bytes) -> tuple[bytes, bytes]:
    """(file meta group, dataset) of a PS3.10 file, cut at the end of the file meta group
    given by its FileMetaInformationGroupLength (read here without pydicom)."""
    assert data[128:132] == b"DICM", "not a PS3.10 file"
    assert data[132:138] == b"\x02\x00\x00\x00UL", "no FileMetaInformationGroupLength first"
    end = 144 + int.from_bytes(data[140:144], "little")
    return data[132:end], data[end:]
