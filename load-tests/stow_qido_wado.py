#!/usr/bin/env python3
"""STOW / QIDO / WADO benchmark against any DICOMweb server (protocol only).

Generates N small CT instances (64x64, 16-bit, spread over a few studies and series), then:

1. STOW-RS: stores them one instance per request, `--concurrency` requests in flight;
2. QIDO-RS: `/studies?PatientName=*X*` (X unique to one study) and `/studies/{s}/series`;
3. WADO-RS: retrieves every instance (multipart/related; type="application/dicom") with
   `--concurrency` requests in flight, checking the bytes, then single frames.

Latency phases (QIDO, frames) run with `--latency-concurrency` requests in flight (default 1,
so the figures are per-request latencies, not queueing). Only standard DICOMweb is used, so the
same run works against this archive and against Orthanc's DICOMweb plugin:

    python load-tests/stow_qido_wado.py --url http://127.0.0.1:8080/dicomweb
    python load-tests/stow_qido_wado.py --url http://127.0.0.1:8042/dicom-web

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
    patient_keys: dict[str, str] = field(default_factory=dict)  # study -> unique name part


def make_instance(study: str, series: str, index: int, name: str, patient_id: str) -> Instance:
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
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    rng = np.random.default_rng(index)
    ds.PixelData = rng.integers(0, 4096, (ROWS, COLUMNS), dtype=np.uint16).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return Instance(study, series, ds.SOPInstanceUID, buffer.getvalue())


def make_corpus(count: int, studies: int, series_per_study: int) -> Corpus:
    tag = uuid.uuid4().hex[:8].upper()
    corpus = Corpus(tag, [], [generate_uid() for _ in range(studies)])
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
            )
        )
    return corpus


def multipart(data: bytes) -> tuple[str, bytes]:
    boundary = uuid.uuid4().hex
    body = b"".join(
        [
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
            data,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    return f'multipart/related; type="application/dicom"; boundary={boundary}', body


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    bytes: int = 0
    unit: str = "req"

    def row(self) -> list[str]:
        done = len(self.latencies)
        ok = done - len(self.errors)
        lat = sorted(self.latencies)
        p50 = statistics.median(lat) * 1000 if lat else float("nan")
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))] * 1000 if lat else float("nan")
        rate = ok / self.seconds if self.seconds else 0.0
        mbps = self.bytes / self.seconds / 1e6 if self.seconds else 0.0
        return [
            self.name,
            str(done),
            str(ok),
            f"{self.seconds:.2f}",
            f"{rate:.1f} {self.unit}/s",
            f"{mbps:.1f}",
            f"{p50:.1f}",
            f"{p95:.1f}",
        ]


async def run_phase(
    phase: Phase,
    jobs: Sequence[Callable[[], Awaitable[int]]],
    concurrency: int,
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

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    phase.seconds = time.perf_counter() - start
    return phase


class Failure(Exception):
    pass


def check(response: httpx.Response, what: str) -> None:
    if response.status_code != 200:
        raise Failure(f"{what}: HTTP {response.status_code} {response.text[:200]!r}")


async def benchmark(args: argparse.Namespace) -> int:
    base = args.url.rstrip("/")
    t0 = time.perf_counter()
    corpus = make_corpus(args.instances, args.studies, args.series)
    size = sum(len(i.data) for i in corpus.instances)
    print(
        f"generated {len(corpus.instances)} instances ({size / 1e6:.1f} MB, "
        f"{args.studies} studies x {args.series} series, {ROWS}x{COLUMNS} 16-bit) "
        f"in {time.perf_counter() - t0:.1f} s; run tag {corpus.tag}",
        file=sys.stderr,
    )
    limits = httpx.Limits(max_connections=max(args.concurrency, args.latency_concurrency))
    rng = random.Random(args.seed)
    async with httpx.AsyncClient(base_url=base, timeout=args.timeout, limits=limits) as client:

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
            path: str, accept: str, params: dict[str, str] | None = None, expect: bytes = b""
        ) -> Callable[[], Awaitable[int]]:
            async def job() -> int:
                response = await client.get(path, params=params, headers={"Accept": accept})
                check(response, f"GET {path}")
                if expect and expect not in response.content:
                    raise Failure(f"GET {path}: the stored bytes are not in the response")
                return len(response.content)

            return job

        def instance_path(inst: Instance) -> str:
            return f"/studies/{inst.study}/series/{inst.series}/instances/{inst.sop}"

        phases = []
        stow = Phase("STOW-RS 1 instance/request", unit="inst")
        phases.append(
            await run_phase(stow, [stow_job(i) for i in corpus.instances], args.concurrency)
        )

        studies = [rng.choice(corpus.studies) for _ in range(args.queries)]
        by_name = Phase("QIDO /studies?PatientName=*X*")
        by_name_jobs = [
            get_job("/studies", JSON_ACCEPT, {"PatientName": f"*{corpus.patient_keys[s]}*"})
            for s in studies
        ]
        phases.append(await run_phase(by_name, by_name_jobs, args.latency_concurrency))
        series = Phase("QIDO /studies/{s}/series")
        series_jobs = [get_job(f"/studies/{s}/series", JSON_ACCEPT) for s in studies]
        phases.append(await run_phase(series, series_jobs, args.latency_concurrency))

        wado = Phase("WADO-RS instance", unit="inst")
        wado_jobs = [
            get_job(instance_path(i), INSTANCE_ACCEPT, expect=i.data) for i in corpus.instances
        ]
        phases.append(await run_phase(wado, wado_jobs, args.concurrency))

        sample = [rng.choice(corpus.instances) for _ in range(args.queries)]
        frames = Phase("WADO-RS frame (latency)")
        frame_jobs = [get_job(instance_path(i) + "/frames/1", args.frame_accept) for i in sample]
        phases.append(await run_phase(frames, frame_jobs, args.latency_concurrency))

        # Correctness of what was measured: each study once, with every instance.
        response = await client.get(
            "/studies",
            params={"PatientName": f"LOADTEST^{corpus.tag}*", "limit": str(args.studies + 10)},
            headers={"Accept": JSON_ACCEPT},
        )
        found = response.json() if response.status_code == 200 else []
        counted = sum(int(s.get("00201208", {}).get("Value", [0])[0]) for s in found)

    header = ["phase", "requests", "ok", "seconds", "throughput", "MB/s", "p50 ms", "p95 ms"]
    rows = [header] + [p.row() for p in phases]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    print(
        f"\n{base}: {args.instances} instances, concurrency {args.concurrency}, "
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
        f"check: {len(found)}/{args.studies} studies found by PatientName, "
        f"{counted}/{args.instances} instances counted"
    )
    failed = False
    for phase in phases:
        if phase.errors:
            failed = True
            print(f"{phase.name}: {len(phase.errors)} failures, first: {phase.errors[0]}")
    if len(found) != args.studies or counted != args.instances:
        failed = True
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="DICOMweb root, e.g. http://host/dicomweb")
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
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.instances < args.studies * args.series:
        parser.error("--instances must be at least --studies x --series")
    return asyncio.run(benchmark(args))


if __name__ == "__main__":
    sys.exit(main())
