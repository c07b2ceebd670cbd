#!/usr/bin/env python3
"""DIMSE with DCMTK's clients, and STOW-RS / WADO-RS with 512 KB CT: our archive and Orthanc.

Each round starts a fresh `pacs serve` and a fresh Orthanc (Debian's `orthanc` +
`orthanc-dicomweb`) one after the other, never both at once, each with a temporary data folder,
free ports, its DICOM port open, and a DCMTK `storescp` of its own registered as the C-MOVE
destination (ours: `--move-destination`; Orthanc: `DicomModalities`, where the calling AE of the
DCMTK clients is registered too, as Orthanc requires for C-FIND, C-MOVE and C-GET). On each
server, in this order:

1. C-STORE of half the studies with one `storescu` (one association), then of the other half
   with four `storescu` at once (four associations), inst/s; every study is then counted by
   QIDO (NumberOfStudyRelatedInstances);
2. `echoscu` and `findscu` (one study-level query), one process each, `--processes` times: ms
   per process, association set-up and process start included;
3. `findscu --repeat R` in one association: ms per query (the process's wall time / R, so its
   start and the association set-up, once, are included), every query must match its study;
4. `movescu` of `--retrievals` studies to the `storescp`, then `getscu` of the same studies,
   inst/s; the files written by storescp / getscu are counted per study;
5. WADO-RS of whole studies with `curl` (`multipart/related; type="application/dicom"`, no
   compression asked), 1 and 8 in flight, MB/s; each answer must be 200 and at least the size
   of the study's pixel data;
6. STOW-RS of a second corpus (same shape, other UIDs), one series per request, 1 and 8 in
   flight, inst/s; each answer must reference every instance and fail none, and the studies
   are counted by QIDO.

Every process of the run has `TCP_NODELAY=1` in its environment: DCMTK's clients, storescp,
and the servers. Debian's DCMTK (which Orthanc's DICOM side is) only turns Nagle's algorithm
off for the sockets it opens or accepts when that variable says so; without it every small
DIMSE message of Orthanc waits for a delayed ACK (C-FIND in one association: about 45 ms per
query instead of 4, measured here). Ours does not read it.

A job whose check fails is an error for that server (shown in the table, exit status 1), never
a figure. With `--rounds` > 1 the order of the servers alternates and the table shows medians;
the ratio is oriented so that above 1 means ours is better (ours/Orthanc for throughputs,
Orthanc/ours for times). The clients run on the same machine as the servers.

    .venv/bin/python load-tests/compare_dimse.py --studies 2
    .venv/bin/python load-tests/compare_dimse.py --rounds 3 --json dimse.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import compare_orthanc
import httpx
import servers
import stow_qido_wado as workload

CLIENT_AE = "BENCHSCU"  # calling AE title of every DCMTK client
DESTINATION_AE = "BENCHSCP"  # the storescp C-MOVE destination
SIZE = 512  # 512 x 512 x 16 bits: 512 KiB of pixel data per instance
PIXEL_BYTES = SIZE * SIZE * 2
NODELAY = {"TCP_NODELAY": "1"}  # read by DCMTK (clients and Orthanc), as in the issue
DCMTK_ENV = {**os.environ, **NODELAY}
TOOL_TIMEOUT = 900.0
HTTP = "127.0.0.1"
TOOLS = ("storescu", "findscu", "movescu", "getscu", "echoscu", "storescp", "curl")


class JobError(Exception):
    """A job's answer was wrong or incomplete: an error for that server, not a figure."""


@dataclass
class Data:
    """What both servers receive: the C-STORE corpus as files, the STOW corpus in memory."""

    store: workload.Corpus
    stow: workload.Corpus
    one: list[Path]  # sent by storescu on one association
    four: list[list[Path]]  # sent by four storescu at once
    studies_one: list[str]  # of `store`; STOW sends the same numbers of `stow`
    studies_four: list[str]
    expected: dict[str, int] = field(default_factory=dict)  # study -> instances, both corpora


@dataclass
class Target:
    """One server under test, with its storescp and a scratch folder for what comes back."""

    server: servers.Server
    data: Data
    args: argparse.Namespace
    received: Path  # where storescp writes
    scratch: Path

    def dcmtk(self, tool: str, *args: str, files: Sequence[Path] = ()) -> list[str]:
        """A DCMTK client's command line calling this server (files come after the peer)."""
        server = self.server
        peer = [HTTP, str(server.dimse_port)]
        return [tool, "-aet", CLIENT_AE, "-aec", server.ae_title, *args, *peer, *map(str, files)]


@dataclass(frozen=True)
class Job:
    key: str
    label: str
    unit: str
    better: str  # "higher" (throughput) or "lower" (time)
    run: Callable[[Target], float]


# -- corpus -----------------------------------------------------------------------------


def by_study(corpus: workload.Corpus) -> dict[str, list[workload.Instance]]:
    out: dict[str, list[workload.Instance]] = {s: [] for s in corpus.studies}
    for inst in corpus.instances:
        out[inst.study].append(inst)
    return out


def write_corpus(args: argparse.Namespace, folder: Path) -> Data:
    t0 = time.perf_counter()
    store = workload.make_corpus(args.instances, args.studies, args.series, size=SIZE)
    stow = workload.make_corpus(args.instances, args.studies, args.series, size=SIZE)
    studies = by_study(store)
    data = Data(store, stow, [], [[] for _ in range(4)], store.studies[::2], store.studies[1::2])
    for corpus in (store, stow):
        data.expected.update({s: len(i) for s, i in by_study(corpus).items()})
    for number, study in enumerate(store.studies):
        for index, inst in enumerate(studies[study]):
            path = folder / f"{number:03d}" / f"{index:04d}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(inst.data)
            if study in data.studies_one:
                data.one.append(path)
            else:
                data.four[index % 4].append(path)
    size = sum(len(i.data) for i in store.instances)
    print(
        f"generated 2 x {len(store.instances)} instances of {SIZE}x{SIZE} 16-bit CT "
        f"({size / 1e6:.0f} MB each), {args.studies} studies x {args.series} series, in "
        f"{time.perf_counter() - t0:.1f} s; tags {store.tag} (C-STORE), {stow.tag} (STOW)",
        file=sys.stderr,
    )
    return data


# -- helpers ----------------------------------------------------------------------------


def tail(text: str, lines: int = 6) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def run_tool(command: list[str]) -> tuple[float, str]:
    """Run a DCMTK tool that must succeed; (wall seconds, its output)."""
    start = time.perf_counter()
    done = subprocess.run(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=DCMTK_ENV,
        timeout=TOOL_TIMEOUT,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise JobError(f"{command[0]} exited with {done.returncode}: {tail(done.stdout)}")
    return elapsed, done.stdout


def run_together(commands: list[list[str]]) -> float:
    """Start every command at once; wall seconds until the last one ends (all must succeed)."""
    start = time.perf_counter()
    with ThreadPoolExecutor(len(commands)) as pool:
        list(pool.map(run_tool, commands))
    return time.perf_counter() - start


def stored(target: Target, corpus: workload.Corpus) -> dict[str, int]:
    """Study -> NumberOfStudyRelatedInstances, by QIDO on the corpus's PatientID prefix (a raw
    `*`: Orthanc's DICOMweb 1.7 does not percent-decode query values)."""
    url = (
        f"{target.server.url}/studies?PatientID=LT-{corpus.tag}*"
        f"&includefield=00201208&limit={len(corpus.studies) + 10}"
    )
    response = httpx.get(url, headers={"Accept": workload.JSON_ACCEPT}, timeout=60)
    if response.status_code != 200:
        raise JobError(f"QIDO count: HTTP {response.status_code} {response.text[:200]!r}")
    return {
        s["0020000D"]["Value"][0]: int(s.get("00201208", {}).get("Value", [0])[0])
        for s in response.json()
    }


def check_stored(target: Target, corpus: workload.Corpus, studies: Sequence[str]) -> None:
    found = stored(target, corpus)
    wrong = [
        f"{s[-12:]}: {found.get(s, 0)} of {target.data.expected[s]}"
        for s in studies
        if found.get(s, 0) != target.data.expected[s]
    ]
    if wrong:
        raise JobError(f"instances counted by QIDO per study: {', '.join(wrong[:4])}")


def files_under(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def wait_for_files(folder: Path, expected: int, timeout: float = 10.0) -> int:
    """Files written under `folder`, once `expected` are there or `timeout` has passed (not
    timed: a storescp may still be closing its last file when movescu returns)."""
    deadline = time.monotonic() + timeout
    while (count := files_under(folder)) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return count


def retrieved_studies(target: Target) -> list[str]:
    studies = target.data.store.studies
    return [studies[i % len(studies)] for i in range(target.args.retrievals)]


def study_query(study: str) -> list[str]:
    return ["-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}"]


def find_command(target: Target, *extra: str) -> tuple[list[str], int]:
    """A study-level findscu matching exactly one study (by PatientID); (command, matches
    expected per query)."""
    keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"PatientID=LT-{target.data.store.tag}S000"]
    keys += ["-k", "StudyInstanceUID", "-k", "PatientName", "-k", "StudyDate"]
    return target.dcmtk("findscu", "-v", "-S", *extra, *keys), 1


def count_find_matches(output: str) -> int:
    """Pending C-FIND responses findscu -v reports (one per match)."""
    return sum("(Pending)" in line and "Find Response" in line for line in output.splitlines())


# -- jobs -------------------------------------------------------------------------------


def c_store(
    groups: Callable[[Data], list[list[Path]]], studies: Callable[[Data], list[str]]
) -> Callable[[Target], float]:
    """storescu, one process (association) per group of files, all at once."""

    def run(target: Target) -> float:
        lists = [g for g in groups(target.data) if g]
        commands = [target.dcmtk("storescu", files=files) for files in lists]
        elapsed = run_together(commands)
        check_stored(target, target.data.store, studies(target.data))
        return sum(len(g) for g in lists) / elapsed

    return run


def per_process(build: Callable[[Target], tuple[list[str], int]]) -> Callable[[Target], float]:
    """Median ms of `--processes` runs of one tool, each a process and an association."""

    def run(target: Target) -> float:
        command, matches = build(target)
        times = []
        for _ in range(target.args.processes):
            elapsed, output = run_tool(command)
            if matches and count_find_matches(output) != matches:
                raise JobError(f"findscu: {count_find_matches(output)} matches, not {matches}")
            times.append(elapsed)
        return statistics.median(times) * 1000

    return run


def echo_command(target: Target) -> tuple[list[str], int]:
    return target.dcmtk("echoscu"), 0


def find_in_association(target: Target) -> float:
    repeat = int(target.args.repeat)
    command, matches = find_command(target, "--repeat", str(repeat))
    elapsed, output = run_tool(command)
    found = count_find_matches(output)
    if found != matches * repeat:
        raise JobError(f"findscu --repeat {repeat}: {found} matches, not {matches * repeat}")
    return elapsed / repeat * 1000


def c_move(target: Target) -> float:
    total, seconds = 0, 0.0
    for study in retrieved_studies(target):
        shutil.rmtree(target.received, ignore_errors=True)
        target.received.mkdir()
        command = target.dcmtk("movescu", "-v", "-aem", DESTINATION_AE, *study_query(study))
        elapsed, output = run_tool(command)
        if "Final Move Response (Success)" not in output:
            raise JobError(f"movescu: no successful final response: {tail(output)}")
        expected = target.data.expected[study]
        if (got := wait_for_files(target.received, expected)) != expected:
            raise JobError(f"C-MOVE: storescp received {got} files, not {expected}")
        total, seconds = total + expected, seconds + elapsed
    return total / seconds


def c_get(target: Target) -> float:
    total, seconds = 0, 0.0
    for number, study in enumerate(retrieved_studies(target)):
        folder = target.scratch / f"get-{number}"
        folder.mkdir(parents=True)
        command = target.dcmtk("getscu", "-v", "+B", "-od", str(folder), *study_query(study))
        elapsed, output = run_tool(command)
        expected = target.data.expected[study]
        if (got := files_under(folder)) != expected:
            raise JobError(f"C-GET: getscu wrote {got} files, not {expected}: {tail(output)}")
        shutil.rmtree(folder)
        total, seconds = total + expected, seconds + elapsed
    return total / seconds


def curl_study(url: str, minimum: int) -> int:
    """GET a whole study with curl, discarding the body; its size (checked)."""
    command = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}"]
    command += ["-H", f"Accept: {workload.INSTANCE_ACCEPT}", url]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False
    )
    status, _, size = done.stdout.partition(" ")
    if done.returncode != 0 or status != "200":
        raise JobError(f"curl {url}: exit {done.returncode}, HTTP {status} {done.stderr[-200:]}")
    if int(size) < minimum:
        raise JobError(f"curl {url}: {size} bytes, less than the pixel data ({minimum})")
    return int(size)


def wado(in_flight: int) -> Callable[[Target], float]:
    def run(target: Target) -> float:
        studies = target.data.store.studies
        picks = [studies[i % len(studies)] for i in range(target.args.wado_requests)]
        urls = [f"{target.server.url}/studies/{s}" for s in picks]
        minimums = [target.data.expected[s] * PIXEL_BYTES for s in picks]
        start = time.perf_counter()
        with ThreadPoolExecutor(in_flight) as pool:
            moved = sum(pool.map(curl_study, urls, minimums))
        return moved / (time.perf_counter() - start) / 1e6

    return run


def stow(in_flight: int, studies: Callable[[Data], list[str]]) -> Callable[[Target], float]:
    def run(target: Target) -> float:
        corpus = target.data.stow
        chosen = studies(target.data)
        series: dict[str, list[workload.Instance]] = {}
        for inst in corpus.instances:
            if inst.study in chosen:
                series.setdefault(inst.series, []).append(inst)
        bodies = [(len(s), *workload.multipart(*(i.data for i in s))) for s in series.values()]
        phase = asyncio.run(post_all(target.server.url, bodies, in_flight, target.args.timeout))
        if phase.errors:
            raise JobError(f"{len(phase.errors)} STOW requests failed, first: {phase.errors[0]}")
        check_stored(target, corpus, chosen)
        return sum(n for n, _, _ in bodies) / phase.seconds

    return run


async def post_all(
    base: str, bodies: list[tuple[int, str, bytes]], in_flight: int, seconds: float
) -> workload.Phase:
    limits = httpx.Limits(max_connections=in_flight)
    async with httpx.AsyncClient(base_url=base, timeout=seconds, limits=limits) as client:

        def job(count: int, content_type: str, body: bytes) -> Callable[[], Awaitable[int]]:
            async def post() -> int:
                headers = {"Content-Type": content_type, "Accept": workload.JSON_ACCEPT}
                response = await client.post("/studies", content=body, headers=headers)
                workload.check(response, "STOW")
                answer = response.json()
                referenced = len(answer.get("00081199", {}).get("Value", []))
                failed = len(answer.get("00081198", {}).get("Value", []))
                if referenced != count or failed:
                    raise JobError(f"STOW: {referenced} of {count} referenced, {failed} failed")
                return len(body)

            return post

        phase = workload.Phase("stow", "STOW-RS one series per request", unit="series")
        jobs = [job(*b) for b in bodies]
        return await workload.run_phase(phase, jobs, in_flight)


JOBS = [
    Job("move", "C-MOVE of a study to a storescp", "inst/s", "higher", c_move),
    Job("get", "C-GET of a study (getscu)", "inst/s", "higher", c_get),
    Job(
        "find_assoc", "C-FIND, per query inside one association", "ms", "lower", find_in_association
    ),
    Job("echo", "echoscu, one process each", "ms", "lower", per_process(echo_command)),
    Job("find", "findscu, one process each", "ms", "lower", per_process(find_command)),
    Job(
        "store1",
        "C-STORE, storescu, 1 association",
        "inst/s",
        "higher",
        c_store(lambda d: [d.one], lambda d: d.studies_one),
    ),
    Job(
        "store4",
        "C-STORE, storescu, 4 associations",
        "inst/s",
        "higher",
        c_store(lambda d: d.four, lambda d: d.studies_four),
    ),
    Job(
        "stow1",
        "STOW-RS, one series per request, 1 in flight",
        "inst/s",
        "higher",
        stow(1, lambda d: d.stow.studies[::2]),
    ),
    Job(
        "stow8",
        "STOW-RS, one series per request, 8 in flight",
        "inst/s",
        "higher",
        stow(8, lambda d: d.stow.studies[1::2]),
    ),
    Job("wado1", "WADO-RS whole study with curl, 1 in flight", "MB/s", "higher", wado(1)),
    Job("wado8", "WADO-RS whole study with curl, 8 in flight", "MB/s", "higher", wado(8)),
]
# Run order on each server: the stores load what the retrievals read.
ORDER = ["store1", "store4", "echo", "find", "find_assoc", "move", "get", "wado1", "wado8"]
ORDER += ["stow1", "stow8"]


# -- one server, one round --------------------------------------------------------------


@dataclass
class Run:
    server: str
    round: int
    values: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)  # server CPU per job, etc.


@contextmanager
def storescp(folder: Path) -> Iterator[int]:
    """DCMTK's storescp as the C-MOVE destination, writing what it receives as received."""
    folder.mkdir(parents=True, exist_ok=True)
    port = servers.free_port()
    command = ["storescp", "+B", "-aet", DESTINATION_AE, "-od", str(folder), str(port)]
    log = (folder.parent / "storescp.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=DCMTK_ENV)
    try:
        echo = ["echoscu", "-aec", DESTINATION_AE, HTTP, str(port)]
        deadline = time.monotonic() + 10
        while subprocess.run(echo, capture_output=True, check=False).returncode != 0:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"storescp did not start: {' '.join(command)}")
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait()
        log.close()


def run_server(
    name: str,
    start: Callable[[servers.Peers], AbstractContextManager[servers.Server]],
    data: Data,
    args: argparse.Namespace,
    number: int,
) -> Run:
    print(f"\n== round {number}: {name}", file=sys.stderr, flush=True)
    result = Run(name, number)
    jobs = {j.key: j for j in JOBS}
    wanted = set(args.jobs.split(",")) if args.jobs else set(jobs)
    with tempfile.TemporaryDirectory(prefix="bench-dimse-") as work:
        scratch = Path(work)
        with storescp(scratch / "received") as port:
            peers = {DESTINATION_AE: (HTTP, port), CLIENT_AE: (HTTP, port)}
            with start(peers) as server:
                target = Target(server, data, args, scratch / "received", scratch / "got")
                run_tool(target.dcmtk("echoscu"))  # the DICOM port answers before timing
                busy0, own0 = servers.busy_seconds(), servers.own_seconds()
                for key in ORDER:
                    if key not in wanted:
                        continue
                    job = jobs[key]
                    cpu0, busy1, own1 = (
                        server.cpu_seconds(),
                        servers.busy_seconds(),
                        servers.own_seconds(),
                    )
                    try:
                        result.values[key] = job.run(target)
                        print(f"{name} {job.label}: {result.values[key]:.1f} {job.unit}")
                    except Exception as exc:  # an error for this server; the next job runs
                        result.errors[key] = f"{type(exc).__name__}: {exc}"
                        print(f"{name} {job.label}: ERROR {result.errors[key]}")
                    cpu = result.extra[f"{key}_server_cpu"] = server.cpu_seconds() - cpu0
                    # What else ran on the machine meanwhile: it competed with the job.
                    result.extra[f"{key}_foreign_cpu"] = max(
                        0.0,
                        servers.busy_seconds() - busy1 - cpu - (servers.own_seconds() - own1),
                    )
                server_cpu = sum(v for k, v in result.extra.items() if k.endswith("_server_cpu"))
                result.extra["peak_rss"] = float(server.peak_rss())
                result.extra["foreign_cpu"] = max(
                    0.0,
                    servers.busy_seconds() - busy0 - server_cpu - (servers.own_seconds() - own0),
                )
    return result


# -- table --------------------------------------------------------------------------------


def median(runs: list[Run], server: str, key: str) -> float:
    values = [r.values[key] for r in runs if r.server == server and key in r.values]
    return statistics.median(values) if values else float("nan")


def cell(runs: list[Run], server: str, key: str) -> str:
    mine = [r for r in runs if r.server == server]
    failed = sum(key in r.errors for r in mine)
    value = median(runs, server, key)
    text = compare_orthanc.fmt(value, 1)
    return f"ERROR ({failed} of {len(mine)})" if failed else text


def ratio(ours: float, theirs: float, better: str) -> float:
    """Above 1: ours is better."""
    if math.isnan(ours) or math.isnan(theirs) or not ours or not theirs:
        return float("nan")
    return ours / theirs if better == "higher" else theirs / ours


def table(runs: list[Run], rounds: int) -> list[list[str]]:
    head = "ours" + (f" (median of {rounds})" if rounds > 1 else "")
    rows = [["job", "unit", head, "Orthanc", "ratio (>1: ours better)"]]
    for job in JOBS:
        ours, theirs = median(runs, "ours", job.key), median(runs, "Orthanc", job.key)
        value = ratio(ours, theirs, job.better)
        rows.append(
            [
                job.label,
                job.unit,
                cell(runs, "ours", job.key),
                cell(runs, "Orthanc", job.key),
                compare_orthanc.fmt(value, 2),
            ]
        )
    return rows


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--series", type=int, default=3, help="series per study")
    parser.add_argument("--instances", type=int, help="instances in all (default: 20 per series)")
    parser.add_argument("--rounds", type=int, default=1, help="fresh servers per round")
    parser.add_argument("--first", choices=["ours", "Orthanc"], default="ours")
    parser.add_argument("--processes", type=int, default=20, help="echoscu/findscu processes")
    parser.add_argument("--repeat", type=int, default=200, help="findscu --repeat in one assoc.")
    parser.add_argument("--retrievals", type=int, default=3, help="studies moved and got")
    parser.add_argument("--wado-requests", type=int, default=24, help="whole-study GETs per job")
    parser.add_argument("--timeout", type=float, default=300.0, help="per STOW request, s")
    parser.add_argument("--pacs", default=servers.default_pacs(), help="`pacs` executable")
    parser.add_argument("--orthanc", default=servers.ORTHANC_BINARY, help="Orthanc executable")
    parser.add_argument("--plugin", default=servers.DICOMWEB_PLUGIN, help="DICOMweb plugin .so")
    parser.add_argument("--keep", action="store_true", help="keep the servers' data folders")
    parser.add_argument("--json", type=Path, help="also write every figure of every run here")
    parser.add_argument(
        "--jobs",
        help="only these jobs, comma-separated keys (e.g. store1,store4,stow1,stow8); "
        "a retrieval job needs the stores before it",
    )
    parser.add_argument(
        "--servers", choices=["both", "ours", "Orthanc"], default="both", help="which to run"
    )
    args = parser.parse_args(argv)
    unknown = set(args.jobs.split(",")) - {j.key for j in JOBS} if args.jobs else set()
    if unknown:
        parser.error(f"unknown jobs {', '.join(sorted(unknown))}: {', '.join(ORDER)}")
    if args.instances is None:
        args.instances = args.studies * args.series * 20
    if args.studies < 2 or args.instances < args.studies * args.series:
        parser.error("needs at least 2 studies and --instances >= --studies x --series")
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        parser.error(f"missing {', '.join(missing)}: apt-get install dcmtk curl")

    starters: dict[str, Callable[[servers.Peers], AbstractContextManager[servers.Server]]] = {
        "ours": lambda peers: servers.pacs_server(
            args.pacs, keep=args.keep, peers=peers, env=NODELAY
        ),
        "Orthanc": lambda peers: servers.orthanc_server(
            args.orthanc, args.plugin, keep=args.keep, peers=peers, env=NODELAY
        ),
    }
    load_before, started = load(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-dimse-corpus-") as folder:
        data = write_corpus(args, Path(folder))
        runs = [
            run_server(name, starters[name], data, args, number)
            for number, names in compare_orthanc.order(args.rounds, args.first)
            for name in names
            if args.servers in ("both", name)
        ]
    load_after = load()

    print(
        f"\n{args.instances} instances of {SIZE}x{SIZE} 16-bit CT ({args.studies} studies x "
        f"{args.series} series), {args.rounds} round(s), {args.retrievals} studies moved/got, "
        f"findscu --repeat {args.repeat}, {args.processes} echoscu/findscu processes, "
        f"{args.wado_requests} WADO requests per job; ours at {servers.revision()}, "
        f"{servers.orthanc_version(args.orthanc)}; {platform.node()}, "
        f"{len(os.sched_getaffinity(0))} CPUs, clients on the same machine; load average "
        f"{load_before} before, {load_after} after; "
        f"{time.perf_counter() - started:.0f} s\n"
    )
    compare_orthanc.print_table(table(runs, args.rounds))
    foreign = ", ".join(f"{r.server} {r.round}: {r.extra['foreign_cpu']:.0f} s" for r in runs)
    print(f"\nCPU used by the rest of the machine during each server's jobs: {foreign}")
    for r in runs:
        for key, error in r.errors.items():
            print(f"ERROR {r.server} round {r.round} {key}: {error}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "revision": servers.revision(),
                    "orthanc": servers.orthanc_version(args.orthanc),
                    "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                    "load_average": {"before": load_before, "after": load_after},
                    "jobs": {
                        j.key: {"label": j.label, "unit": j.unit, "better": j.better} for j in JOBS
                    },
                    "runs": [vars(r) for r in runs],
                },
                indent=2,
            )
        )
    return 1 if any(r.errors for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
