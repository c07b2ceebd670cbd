#!/usr/bin/env python3
"""Run the stow_qido_wado.py workload against our archive and against Orthanc, same corpus.

Each round starts a fresh `pacs serve` and a fresh Orthanc (Debian's `orthanc` +
`orthanc-dicomweb`), each with a temporary data folder and free ports, one after the other
(never both at once, so they do not compete for the CPU), runs the same workload (same
instances, same queries) against each, stops it, and finally prints a side-by-side table with
the ratio ours/Orthanc. With `--rounds` > 1 the order alternates between rounds and the table
shows the median of the rounds. The client runs on the same machine as the server.

    .venv/bin/python load-tests/compare_orthanc.py --instances 1000
    .venv/bin/python load-tests/compare_orthanc.py --instances 2000 --rounds 3 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import servers
import stow_qido_wado as workload


@dataclass(frozen=True)
class Figure:
    label: str
    better: str  # "higher" or "lower"
    read: Callable[[workload.Report, dict[str, float]], float]
    digits: int = 1


def _per_instance_cpu(key: str) -> Callable[[workload.Report, dict[str, float]], float]:
    def read(report: workload.Report, _: dict[str, float]) -> float:
        phase = report.phase(key)
        cpu = phase.server_cpu if phase.server_cpu is not None else float("nan")
        return cpu / phase.ok * 1000 if phase.ok else float("nan")

    return read


FIGURES = [
    Figure("STOW inst/s", "higher", lambda r, _: r.phase("stow").rate),
    Figure("STOW p50 ms (conc.)", "lower", lambda r, _: r.phase("stow").percentile(0.5)),
    Figure("STOW server CPU ms/inst", "lower", _per_instance_cpu("stow"), 2),
    Figure("QIDO PatientName p50 ms", "lower", lambda r, _: r.phase("qido_name").percentile(0.5)),
    Figure("QIDO PatientName p95 ms", "lower", lambda r, _: r.phase("qido_name").percentile(0.95)),
    Figure("QIDO series p50 ms", "lower", lambda r, _: r.phase("qido_series").percentile(0.5)),
    Figure("QIDO series p95 ms", "lower", lambda r, _: r.phase("qido_series").percentile(0.95)),
    Figure("WADO inst/s", "higher", lambda r, _: r.phase("wado").rate),
    Figure("WADO server CPU ms/inst", "lower", _per_instance_cpu("wado"), 2),
    Figure("frame p50 ms", "lower", lambda r, _: r.phase("frame").percentile(0.5)),
    Figure("frame p95 ms", "lower", lambda r, _: r.phase("frame").percentile(0.95)),
    Figure("server peak RSS MiB", "lower", lambda _, x: x["peak_rss"] / 2**20, 0),
    Figure("data folder MiB", "lower", lambda _, x: x["stored"] / 2**20, 0),
    Figure("CPU s outside server+client", "", lambda _, x: x["foreign_cpu"], 1),
]


@dataclass
class Run:
    server: str
    round: int
    report: workload.Report
    extra: dict[str, float]

    def values(self) -> dict[str, float]:
        return {f.label: f.read(self.report, self.extra) for f in FIGURES}


def run_one(
    name: str,
    start: Callable[[], AbstractContextManager[servers.Server]],
    corpus: workload.Corpus,
    args: argparse.Namespace,
    number: int,
) -> Run:
    print(f"\n== round {number}: {name}", file=sys.stderr, flush=True)
    with start() as server:
        t0, busy0, own0, cpu0 = (
            time.perf_counter(),
            servers.busy_seconds(),
            servers.own_seconds(),
            server.cpu_seconds(),
        )
        report = asyncio.run(workload.run_workload(server.url, corpus, args, server.cpu_seconds))
        server_cpu, client_cpu = server.cpu_seconds() - cpu0, servers.own_seconds() - own0
        extra = {
            "seconds": time.perf_counter() - t0,
            "peak_rss": float(server.peak_rss()),
            "server_cpu": server_cpu,
            "client_cpu": client_cpu,
            # Whatever else ran on the machine meanwhile: it competed with the measurement.
            "foreign_cpu": max(0.0, servers.busy_seconds() - busy0 - server_cpu - client_cpu),
            "stored": float(server.stored_bytes()),
        }
        workload.print_report(report, args)
        print(
            f"{name}: pid {server.pid}, peak RSS {extra['peak_rss'] / 2**20:.0f} MiB, "
            f"data folder {extra['stored'] / 2**20:.0f} MiB; CPU during the workload: server "
            f"{server_cpu:.1f} s, client {client_cpu:.1f} s, rest of the machine "
            f"{extra['foreign_cpu']:.1f} s, in {extra['seconds']:.1f} s"
        )
    return Run(name, number, report, extra)


def order(rounds: int, first: str) -> Iterator[tuple[int, list[str]]]:
    names = ["ours", "Orthanc"] if first == "ours" else ["Orthanc", "ours"]
    for number in range(1, rounds + 1):
        yield number, names if number % 2 else names[::-1]


def fmt(value: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def table(runs: list[Run], rounds: int) -> list[list[str]]:
    def median(server: str, label: str) -> float:
        values = [r.values()[label] for r in runs if r.server == server]
        values = [v for v in values if not math.isnan(v)]
        return statistics.median(values) if values else float("nan")

    rows = [["figure", "ours", "Orthanc", "ours/Orthanc", "better"]]
    for f in FIGURES:
        ours, theirs = median("ours", f.label), median("Orthanc", f.label)
        ratio = fmt(ours / theirs, 2) if theirs and f.better else "-"
        rows.append([f.label, fmt(ours, f.digits), fmt(theirs, f.digits), ratio, f.better or "-"])
    if rounds > 1:
        rows[0][1] += f" (median of {rounds})"
    return rows


def print_table(rows: list[list[str]]) -> None:
    """A Markdown table: figures left-aligned, numbers right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    rule = ["-" * (w + 1) + ("-" if i == 0 else ":") for i, w in enumerate(widths)]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(rows[0], widths, strict=True)) + " |")
    print("|" + "|".join(rule) + "|")
    for row in rows[1:]:
        pairs = enumerate(zip(row, widths, strict=True))
        print("| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs) + " |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    workload.add_workload_arguments(parser)
    parser.set_defaults(instances=1000)
    parser.add_argument("--rounds", type=int, default=1, help="fresh servers per round")
    parser.add_argument("--first", choices=["ours", "Orthanc"], default="ours")
    parser.add_argument("--pacs", default=servers.default_pacs(), help="`pacs` executable")
    parser.add_argument("--orthanc", default=servers.ORTHANC_BINARY, help="Orthanc executable")
    parser.add_argument("--plugin", default=servers.DICOMWEB_PLUGIN, help="DICOMweb plugin .so")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data folders")
    parser.add_argument("--json", type=Path, help="also write every figure of every run here")
    args = parser.parse_args(argv)
    workload.check_workload_arguments(parser, args)

    starters: dict[str, Callable[[], AbstractContextManager[servers.Server]]] = {
        "ours": lambda: servers.pacs_server(args.pacs, keep=args.keep),
        "Orthanc": lambda: servers.orthanc_server(args.orthanc, args.plugin, keep=args.keep),
    }
    corpus = workload.generate(args)
    runs = [
        run_one(name, starters[name], corpus, args, number)
        for number, names in order(args.rounds, args.first)
        for name in names
    ]

    print(
        f"\n{args.instances} instances, {args.studies} studies x {args.series} series, "
        f"STOW/WADO concurrency {args.concurrency}, QIDO/frame {args.queries} requests at "
        f"concurrency {args.latency_concurrency}; Accept-Encoding {args.accept_encoding}; ours at "
        f"{servers.revision()}, {servers.orthanc_version(args.orthanc)}; "
        f"{platform.node()}, {len(os.sched_getaffinity(0))} CPUs, "
        "client on the same machine\n"
    )
    print_table(table(runs, args.rounds))
    failed = [f"{r.server} round {r.round}" for r in runs if not r.report.ok]
    if failed:
        print(f"\nchecks FAILED for: {', '.join(failed)}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "revision": servers.revision(),
                    "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                    "runs": [
                        {
                            "server": r.server,
                            "round": r.round,
                            "ok": r.report.ok,
                            **r.values(),
                            **r.extra,
                        }
                        for r in runs
                    ],
                },
                indent=2,
            )
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
