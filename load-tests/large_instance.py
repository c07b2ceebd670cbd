#!/usr/bin/env python3
"""One very large instance through STOW-RS and WADO-RS: throughput and server peak memory.

Builds a multi-frame CT (512x512, 16-bit, `--frames` frames; the default 4096 is 2 GiB of pixel
data) as a stream, never whole in memory on the client side, and for each server asked for
(a fresh `pacs serve`, a fresh Orthanc, or both, one after the other):

1. STOW-RS: POST /studies, multipart/related; type="application/dicom", one part, with a
   Content-Length (not chunked);
2. WADO-RS: GET /studies/{study} (multipart/related; type="application/dicom"), streamed and
   counted, checking one pixel byte per chunk received (every frame is filled with one value).

It reports MiB/s for both, and the server's peak resident memory (VmHWM from
/proc/<pid>/status) when idle, after STOW and after WADO. A request still running after `--cap`
seconds is given up on: the server is killed (so a server that buffers everything cannot run
the machine out of memory) and the table says so.

    .venv/bin/python load-tests/large_instance.py                  # ours, 2 GiB
    .venv/bin/python load-tests/large_instance.py --server both    # ours, then Orthanc
"""

from __future__ import annotations

import argparse
import math
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import httpx
import servers
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

MiB = 2**20
BOUNDARY = "large-instance-boundary"


def frame_value(number: int) -> int:
    """The byte every pixel of frame `number` (1-based) is filled with."""
    return number % 251


class LargeInstance:
    """A Part 10 file whose Pixel Data is produced frame by frame."""

    def __init__(self, frames: int, rows: int = 512, columns: int = 512) -> None:
        self.frames = frames
        self.frame_size = rows * columns * 2
        ds = Dataset()
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.PatientName, ds.PatientID = "LARGE^INSTANCE", "LARGE-1"
        ds.StudyDate, ds.StudyTime, ds.Modality = "20240102", "101500", "CT"
        ds.SeriesNumber, ds.InstanceNumber = 1, 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        buffer = DicomBytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        self.dataset = ds
        self.pixel_length = self.frame_size * frames
        if self.pixel_length >= 0xFFFFFFFF:
            raise ValueError(f"{self.pixel_length} bytes of pixel data exceed a 32-bit length")
        # Pixel Data (7FE0,0010) OW, explicit VR little endian, 32-bit length, value follows.
        self.header = buffer.getvalue() + struct.pack(
            "<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, self.pixel_length
        )
        self.size = len(self.header) + self.pixel_length

    def chunks(self) -> Iterator[bytes]:
        yield self.header
        for number in range(1, self.frames + 1):
            yield bytes([frame_value(number)]) * self.frame_size

    def expected_at(self, offset: int) -> int | None:
        """The byte at `offset` of the file, if it is in the pixel data."""
        pixel = offset - len(self.header)
        if 0 <= pixel < self.pixel_length:
            return frame_value(pixel // self.frame_size + 1)
        return None


@dataclass
class Phase:
    """One request (STOW or WADO) as measured: outcome, time, memory and CPU."""

    status: str = "not run"
    bytes: int = 0
    seconds: float = float("nan")
    peak: int = 0
    cpu: float = float("nan")
    other: float = float("nan")  # CPU seconds of the rest of the machine


@dataclass
class Result:
    server: str
    idle_peak: int = 0
    stow: Phase = field(default_factory=Phase)
    wado: Phase = field(default_factory=Phase)
    notes: list[str] = field(default_factory=list)


class Watch:
    """Samples the server's VmHWM and kills it if a request runs past `cap` seconds."""

    def __init__(self, server: servers.Server, cap: float) -> None:
        self.server, self.cap = server, cap
        self.peak = server.peak_rss()
        self.killed = False
        self._deadline = float("inf")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, self.server.peak_rss())
            if time.monotonic() > self._deadline and self.server.alive():
                self.killed = True
                self.server.kill()

    def arm(self) -> None:
        self._deadline = time.monotonic() + self.cap

    def disarm(self) -> None:
        self._deadline = float("inf")
        self.peak = max(self.peak, self.server.peak_rss())

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def stow(client: httpx.Client, base: str, inst: LargeInstance) -> httpx.Response:
    opening = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    closing = f"\r\n--{BOUNDARY}--\r\n".encode()

    def body() -> Iterator[bytes]:
        yield opening
        yield from inst.chunks()
        yield closing

    return client.post(
        f"{base}/studies",
        content=body(),
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
            "Content-Length": str(len(opening) + inst.size + len(closing)),
            "Accept": "application/dicom+json",
        },
    )


def wado(client: httpx.Client, base: str, inst: LargeInstance) -> tuple[int, int, str]:
    """Stream the study back; returns (status, bytes received, check result)."""
    url = f"{base}/studies/{inst.dataset.StudyInstanceUID}"
    received, start, problem = 0, -1, ""
    head = b""
    headers = {"Accept": 'multipart/related; type="application/dicom"'}
    with client.stream("GET", url, headers=headers) as response:
        for chunk in response.iter_raw():
            if start < 0:
                head += chunk
                found = head.find(inst.header[:256])
                if found >= 0:
                    start = found
                elif len(head) > MiB:
                    problem = "the instance header is not in the first MiB"
            elif not problem:
                expected = inst.expected_at(received - start)
                if expected is not None and chunk and chunk[0] != expected:
                    problem = f"wrong pixel byte at offset {received - start}"
            received += len(chunk)
        status = response.status_code
    if not problem and start < 0:
        problem = "the instance header was not received"
    elif not problem and received - start < inst.size:
        problem = f"{received - start} bytes after the header start, not {inst.size}"
    return status, received, problem or "bytes ok"


def timed(
    server: servers.Server, watch: Watch, cap: float, request: Callable[[], tuple[str, int]]
) -> Phase:
    """Run `request` (returning its status text and bytes moved) under the memory watch."""
    phase = Phase()
    cpu0 = server.cpu_seconds()
    busy0, own0 = servers.busy_seconds(), servers.own_seconds()
    watch.arm()
    t0 = time.perf_counter()
    phase.status, phase.bytes = request()
    phase.seconds = time.perf_counter() - t0
    watch.disarm()
    phase.cpu = server.cpu_seconds() - cpu0
    busy, own = servers.busy_seconds() - busy0, servers.own_seconds() - own0
    phase.other = max(0.0, busy - phase.cpu - own)
    phase.peak = watch.peak
    if watch.killed:
        phase.status = f"killed after {cap:.0f} s"
    return phase


def measure(
    name: str,
    start: Callable[[], AbstractContextManager[servers.Server]],
    inst: LargeInstance,
    cap: float,
) -> Result:
    result = Result(name)
    print(f"== {name}", file=sys.stderr, flush=True)

    def do_stow(client: httpx.Client, base: str) -> tuple[str, int]:
        try:
            response = stow(client, base, inst)
        except httpx.HTTPError as exc:
            result.notes.append(f"STOW: {exc}")
            return type(exc).__name__, 0
        if response.status_code != 200:
            result.notes.append(f"STOW answer: {response.text[:300]!r}")
            return f"HTTP {response.status_code}", 0
        return "HTTP 200", inst.size

    def do_wado(client: httpx.Client, base: str) -> tuple[str, int]:
        try:
            status, received, check = wado(client, base, inst)
        except httpx.HTTPError as exc:
            result.notes.append(f"WADO: {exc}")
            return type(exc).__name__, 0
        return f"HTTP {status}, {check}", received

    with start() as server:
        result.idle_peak = server.peak_rss()
        watch = Watch(server, cap)
        timeout = httpx.Timeout(cap + 30, connect=10)
        try:
            # identity: Orthanc would otherwise gzip the 2 GiB answer (httpx asks for gzip).
            headers = {"Accept-Encoding": "identity"}
            with httpx.Client(timeout=timeout, headers=headers) as client:
                result.stow = timed(server, watch, cap, lambda: do_stow(client, server.url))
                print(f"{name}: STOW {result.stow.status}", file=sys.stderr, flush=True)
                if result.stow.status.endswith("200"):
                    result.wado = timed(server, watch, cap, lambda: do_wado(client, server.url))
        finally:
            watch.close()
    return result


def print_results(results: list[Result], inst: LargeInstance) -> None:
    def rate(size: int, seconds: float) -> str:
        return "n/a" if math.isnan(seconds) or seconds <= 0 else f"{size / MiB / seconds:.0f}"

    rows = [["figure", *(r.server for r in results)]]
    for label, phases in (("STOW", [r.stow for r in results]), ("WADO", [r.wado for r in results])):
        rows.append([f"{label} result", *(p.status for p in phases)])
        rows.append([f"{label} seconds", *(f"{p.seconds:.1f}" for p in phases)])
        # A STOW counts its bytes only when the instance was stored (HTTP 200).
        rows.append(
            [f"{label} MiB/s", *(rate(p.bytes, p.seconds) if p.bytes else "n/a" for p in phases)]
        )
        rows.append([f"{label} server CPU s", *(f"{p.cpu:.1f}" for p in phases)])
        rows.append([f"{label} CPU s outside server+client", *(f"{p.other:.1f}" for p in phases)])
    rows.append(["peak RSS idle MiB", *(f"{r.idle_peak / MiB:.0f}" for r in results)])
    rows.append(["peak RSS after STOW MiB", *(f"{r.stow.peak / MiB:.0f}" for r in results)])
    rows.append(["peak RSS after WADO MiB", *(f"{r.wado.peak / MiB:.0f}" for r in results)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(
        f"\none instance of {inst.size} bytes = {inst.size / MiB:.1f} MiB ({inst.frames} frames of "
        f"{inst.frame_size // 1024} KiB), client on the same machine\n"
    )
    for index, row in enumerate(rows):
        pairs = enumerate(zip(row, widths, strict=True))
        print("| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs) + " |")
        if index == 0:
            rule = ["-" * (w + 1) + ("-" if i == 0 else ":") for i, w in enumerate(widths)]
            print("|" + "|".join(rule) + "|")
    for r in results:
        for note in r.notes:
            print(f"{r.server}: {note}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=4096, help="frames (4096 => 2 GiB)")
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--columns", type=int, default=512)
    parser.add_argument("--server", choices=["ours", "Orthanc", "both"], default="ours")
    parser.add_argument("--cap", type=float, default=300.0, help="seconds per request at most")
    parser.add_argument("--pacs", default=servers.default_pacs(), help="`pacs` executable")
    parser.add_argument("--orthanc", default=servers.ORTHANC_BINARY, help="Orthanc executable")
    parser.add_argument("--plugin", default=servers.DICOMWEB_PLUGIN, help="DICOMweb plugin .so")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data folders")
    args = parser.parse_args(argv)
    try:
        inst = LargeInstance(args.frames, args.rows, args.columns)
    except ValueError as exc:
        parser.error(str(exc))
    starters: dict[str, Callable[[], AbstractContextManager[servers.Server]]] = {
        "ours": lambda: servers.pacs_server(args.pacs, keep=args.keep),
        "Orthanc": lambda: servers.orthanc_server(args.orthanc, args.plugin, keep=args.keep),
    }
    names = ["ours", "Orthanc"] if args.server == "both" else [args.server]
    results = [measure(name, starters[name], inst, args.cap) for name in names]
    sys.stderr.flush()
    print_results(results, inst)
    return 0 if all(r.wado.status.endswith("bytes ok") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
