#!/usr/bin/env python3
"""STOW / QIDO / WADO benchmark against any DICOMweb server (protocol only).

Generates N small CT instances (64x64, 16-bit, spread over a few studies and series), then:

1. STOW-RS: stores them one instance per request, `--concurrency` requests in flight;
2. QIDO-RS: `/studies?PatientName=*X*` (X unique to one study, the answer must be exactly that
   study) and `/studies/{s}/series` (the answer must list every series of the study);
3. WADO-RS: retrieves every instance (multipart/related; type="application/dicom") with
   `--concurrency` requests in flight, checking the bytes, then single frames (checking the
   pixel bytes).

Latency phases (QIDO, frames) run with `--latency-concurrency` requests in flight (default 1,
so the figures are per-request latencies, not queueing). Only standard DICOMweb is used, so the
same run works against this archive and against Orthanc's DICOMweb plugin:

    python load-tests/stow_qido_wado.py --url http://127.0.0.1:8080/dicomweb
    python load-tests/stow_qido_wado.py --url http://127.0.0.1:8042/dicom-web

Query strings are sent with a raw `*` and no `^` because Orthanc 1.10 with DICOMweb plugin 1.7
does not percent-decode query values (`PatientName=%2AX%2A` matches nothing there).
`compare_orthanc.py` runs this workload against a fresh `pacs serve` and a fresh Orthanc.

Requests carry `Accept-Encoding: identity` unless `--accept-encoding` says otherwise: Orthanc
gzips DICOM JSON and multipart answers (even of DICOM files) for clients that accept it, this
archive does not compress, so by default both send the same bytes.

Needs httpx, pydicom and numpy. Every run uses fresh UIDs and patient names, so it can be
repeated against the same server.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import httpx
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROWS = COLUMNS = 64
INSTANCE_ACCEPT = 'multipart/related; type="application/dicom"'
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"'
JSON_ACCEPT = "application/dicom+json"


@dataclass(frozen=True)
class Instance:
    study: str
    series: str
    sop: str
    data: bytes


@dataclass
class Corpus:
    tag: str  # unique to this run, part of every PatientName
    instances: list[Instance]
    studies: list[str]
    series_per_study: int
    patient_keys: dict[str, str] = field(default_factory=dict)  # study -> unique name part


def make_instance(
    study: str, series: str, index: int, name: str, patient_id: str, *, size: int = ROWS
) -> Instance:
    """A `size` x `size` 16-bit CT (12 bits stored) with random pixels seeded by `index`."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID = name, patient_id
    ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20240102", "101500", "1"
    ds.AccessionNumber, ds.ReferringPhysicianName = "LOAD", "REF^DOC"
    ds.StudyDescription, ds.SeriesDescription = "load test", "load test series"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, index + 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    rng = np.random.default_rng(index)
    ds.PixelData = rng.integers(0, 4096, (size, size), dtype=np.uint16).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return Instance(study, series, ds.SOPInstanceUID, buffer.getvalue())


def make_corpus(count: int, studies: int, series_per_study: int, size: int = ROWS) -> Corpus:
    tag = uuid.uuid4().hex[:8].upper()
    corpus = Corpus(tag, [], [generate_uid() for _ in range(studies)], series_per_study)
    series = {s: [generate_uid() for _ in range(series_per_study)] for s in corpus.studies}
    for number, study in enumerate(corpus.studies):
        corpus.patient_keys[study] = f"{tag}S{number:03d}"
    for index in range(count):
        study = corpus.studies[index % studies]
        key = corpus.patient_keys[study]
        corpus.instances.append(
            make_instance(
                study,
                series[study][(index // studies) % series_per_study],
                index,
                name=f"LOADTEST^{key}",
                patient_id=f"LT-{key}",
                size=size,
            )
        )
    return corpus


def multipart(*files: bytes) -> tuple[str, bytes]:
    """A STOW-RS body of one part per file, and its Content-Type."""
    boundary = uuid.uuid4().hex
    head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    body = b"".join(
        [
            *(part for data in files for part in (head, data, b"\r\n")),
            f"--{boundary}--\r\n".encode(),
        ]
    )
    return f'multipart/related; type="application/dicom"; boundary={boundary}', body


@dataclass
class Phase:
    key: str  # short name: stow, qido_name, qido_series, wado, frame
    name: str
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    bytes: int = 0
    unit: str = "req"
    server_cpu: float | None = None  # server CPU seconds during the phase, when known

    @property
    def ok(self) -> int:
        return len(self.latencies) - len(self.errors)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        """Latency in ms: the median for 0.5, else the value at rank `fraction`."""
        lat = sorted(self.latencies)
        if not lat:
            return float("nan")
        if fraction == 0.5:
            return statistics.median(lat) * 1000
        return lat[min(len(lat) - 1, int(fraction * len(lat)))] * 1000

    def row(self) -> list[str]:
        mbps = self.bytes / self.seconds / 1e6 if self.seconds else 0.0
        cpu = "" if self.server_cpu is None else f"{self.server_cpu:.2f}"
        return [
            self.name,
            str(len(self.latencies)),
            str(self.ok),
            f"{self.seconds:.2f}",
            f"{self.rate:.1f} {self.unit}/s",
            f"{mbps:.1f}",
            f"{self.percentile(0.5):.1f}",
            f"{self.percentile(0.95):.1f}",
            cpu,
        ]


async def run_phase(
    phase: Phase,
    jobs: Sequence[Callable[[], Awaitable[int]]],
    concurrency: int,
    server_cpu: Callable[[], float] | None = None,
) -> Phase:
    """Run `jobs` (each returns bytes moved, raises on failure) with `concurrency` workers."""
    queue: asyncio.Queue[Callable[[], Awaitable[int]]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def worker() -> None:
        while not queue.empty():
            job = queue.get_nowait()
            start = time.perf_counter()
            try:
                moved = await job()  # not `phase.bytes += await ...`: lost updates
                phase.bytes += moved
            except Exception as exc:  # report, keep going
                phase.errors.append(f"{type(exc).__name__}: {exc}")
            phase.latencies.append(time.perf_counter() - start)

    cpu0 = server_cpu() if server_cpu else 0.0
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    phase.seconds = time.perf_counter() - start
    if server_cpu:
        phase.server_cpu = server_cpu() - cpu0
    return phase


class Failure(Exception):
    pass


def check(response: httpx.Response, what: str) -> None:
    if response.status_code != 200:
        raise Failure(f"{what}: HTTP {response.status_code} {response.text[:200]!r}")


@dataclass
class Report:
    url: str
    phases: list[Phase]
    studies_found: int
    instances_counted: int
    studies_expected: int
    instances_expected: int

    def phase(self, key: str) -> Phase:
        return next(p for p in self.phases if p.key == key)

    @property
    def ok(self) -> bool:
        return not any(p.errors for p in self.phases) and (
            self.studies_found == self.studies_expected
            and self.instances_counted == self.instances_expected
        )


async def run_workload(
    base: str,
    corpus: Corpus,
    args: argparse.Namespace,
    server_cpu: Callable[[], float] | None = None,
) -> Report:
    """Run the five phases against the DICOMweb root `base`; `server_cpu` (optional) reads the
    server's cumulative CPU seconds, to report what each phase cost the server."""
    base = base.rstrip("/")
    limits = httpx.Limits(max_connections=max(args.concurrency, args.latency_concurrency))
    rng = random.Random(args.seed)
    frame_size = ROWS * COLUMNS * 2
    headers = {"Accept-Encoding": args.accept_encoding}
    async with httpx.AsyncClient(
        base_url=base, timeout=args.timeout, limits=limits, headers=headers
    ) as client:

        def stow_job(inst: Instance) -> Callable[[], Awaitable[int]]:
            async def job() -> int:
                content_type, body = multipart(inst.data)
                response = await client.post(
                    "/studies",
                    content=body,
                    headers={"Content-Type": content_type, "Accept": JSON_ACCEPT},
                )
                check(response, f"STOW {inst.sop}")
                return len(inst.data)

            return job

        def get_job(
            path: str,
            accept: str,
            expect: bytes = b"",
            validate: Callable[[httpx.Response], None] | None = None,
        ) -> Callable[[], Awaitable[int]]:
            async def job() -> int:
                response = await client.get(path, headers={"Accept": accept})
                check(response, f"GET {path}")
                if expect and expect not in response.content:
                    raise Failure(f"GET {path}: the stored bytes are not in the response")
                if validate:
                    validate(response)
                return len(response.content)

            return job

        def one_study(study: str) -> Callable[[httpx.Response], None]:
            def validate(response: httpx.Response) -> None:
                found = [r.get("0020000D", {}).get("Value", [None])[0] for r in response.json()]
                if found != [study]:
                    raise Failure(f"QIDO: expected study {study}, got {found}")

            return validate

        def all_series(response: httpx.Response) -> None:
            if len(response.json()) != corpus.series_per_study:
                raise Failure(f"QIDO: {len(response.json())} series, not {corpus.series_per_study}")

        def instance_path(inst: Instance) -> str:
            return f"/studies/{inst.study}/series/{inst.series}/instances/{inst.sop}"

        phases = []
        stow = Phase("stow", "STOW-RS 1 instance/request", unit="inst")
        stow_jobs = [stow_job(i) for i in corpus.instances]
        phases.append(await run_phase(stow, stow_jobs, args.concurrency, server_cpu))

        # Query strings are written out, not built from a dict: Orthanc 1.10 / DICOMweb 1.7 do not
        # percent-decode them, and httpx would send `*` as %2A. `*` is legal raw in a query
        # (RFC 3986 sub-delims); the keys are letters and digits only.
        studies = [rng.choice(corpus.studies) for _ in range(args.queries)]
        by_name = Phase("qido_name", "QIDO /studies?PatientName=*X*")
        by_name_jobs = [
            get_job(
                f"/studies?PatientName=*{corpus.patient_keys[s]}*",
                JSON_ACCEPT,
                validate=one_study(s),
            )
            for s in studies
        ]
        lc = args.latency_concurrency
        phases.append(await run_phase(by_name, by_name_jobs, lc, server_cpu))
        series = Phase("qido_series", "QIDO /studies/{s}/series")
        series_jobs = [
            get_job(f"/studies/{s}/series", JSON_ACCEPT, validate=all_series) for s in studies
        ]
        phases.append(await run_phase(series, series_jobs, lc, server_cpu))

        wado = Phase("wado", "WADO-RS instance", unit="inst")
        wado_jobs = [
            get_job(instance_path(i), INSTANCE_ACCEPT, expect=i.data) for i in corpus.instances
        ]
        phases.append(await run_phase(wado, wado_jobs, args.concurrency, server_cpu))

        # Frame 1 of these single-frame native instances is the Pixel Data value, the last
        # `frame_size` bytes of the file.
        sample = [rng.choice(corpus.instances) for _ in range(args.queries)]
        frames = Phase("frame", "WADO-RS frame (latency)")
        frame_jobs = [
            get_job(instance_path(i) + "/frames/1", args.frame_accept, expect=i.data[-frame_size:])
            for i in sample
        ]
        phases.append(await run_phase(frames, frame_jobs, lc, server_cpu))

        # Correctness of what was measured: each study once, with every instance.
        response = await client.get(
            f"/studies?PatientID=LT-{corpus.tag}*&limit={len(corpus.studies) + 10}",
            headers={"Accept": JSON_ACCEPT},
        )
        found = response.json() if response.status_code == 200 else []
        counted = sum(int(s.get("00201208", {}).get("Value", [0])[0]) for s in found)
    return Report(base, phases, len(found), counted, len(corpus.studies), len(corpus.instances))


def print_report(report: Report, args: argparse.Namespace) -> None:
    header = ["phase", "requests", "ok", "seconds", "throughput", "MB/s", "p50 ms", "p95 ms"]
    with_cpu = any(p.server_cpu is not None for p in report.phases)
    if with_cpu:
        header.append("server CPU s")
    rows = [header] + [p.row()[: len(header)] for p in report.phases]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    print(
        f"\n{report.url}: {report.instances_expected} instances, concurrency {args.concurrency}, "
        f"latency phases at concurrency {args.latency_concurrency}, {args.queries} queries each"
    )
    for index, row in enumerate(rows):
        print(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if index == 0:
            print("  ".join("-" * w for w in widths))
    print(
        f"check: {report.studies_found}/{report.studies_expected} studies found by PatientID, "
        f"{report.instances_counted}/{report.instances_expected} instances counted"
    )
    for phase in report.phases:
        if phase.errors:
            print(f"{phase.name}: {len(phase.errors)} failures, first: {phase.errors[0]}")


def generate(args: argparse.Namespace) -> Corpus:
    t0 = time.perf_counter()
    corpus = make_corpus(args.instances, args.studies, args.series)
    size = sum(len(i.data) for i in corpus.instances)
    print(
        f"generated {len(corpus.instances)} instances ({size / 1e6:.1f} MB, "
        f"{args.studies} studies x {args.series} series, {ROWS}x{COLUMNS} 16-bit) "
        f"in {time.perf_counter() - t0:.1f} s; run tag {corpus.tag}",
        file=sys.stderr,
    )
    return corpus


async def benchmark(args: argparse.Namespace) -> int:
    report = await run_workload(args.url, generate(args), args)
    print_report(report, args)
    return 0 if report.ok else 1


def add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by this script and compare_orthanc.py (everything but the server)."""
    parser.add_argument("--instances", type=int, default=2000, help="instances to store")
    parser.add_argument("--concurrency", type=int, default=8, help="STOW/WADO requests in flight")
    parser.add_argument(
        "--latency-concurrency", type=int, default=1, help="QIDO/frame requests in flight"
    )
    parser.add_argument("--studies", type=int, default=20, help="studies to spread them over")
    parser.add_argument("--series", type=int, default=3, help="series per study")
    parser.add_argument("--queries", type=int, default=200, help="requests per latency phase")
    parser.add_argument("--frame-accept", default=FRAME_ACCEPT, help="Accept for frames")
    parser.add_argument("--timeout", type=float, default=60.0, help="per request, seconds")
    parser.add_argument(
        "--accept-encoding",
        default="identity",
        help="Accept-Encoding of every request; Orthanc gzips JSON and multipart answers when "
        "allowed, ours never does (default identity: both send the same bytes)",
    )
    parser.add_argument("--seed", type=int, default=0)


def check_workload_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.instances < args.studies * args.series:
        parser.error("--instances must be at least --studies x --series")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="DICOMweb root, e.g. http://host/dicomweb")
    add_workload_arguments(parser)
    args = parser.parse_args(argv)
    check_workload_arguments(parser, args)
    return asyncio.run(benchmark(args))


if __name__ == "__main__":
    sys.exit(main())
