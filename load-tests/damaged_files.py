#!/usr/bin/env python3
"""Store N damaged files (seeded mutants of the pydicom test corpora) into a fresh `pacs serve`,
then ask every retrieval route for each stored one; print what was stored and refused, and
the statuses per route. Exits 1 if any answer was a 5xx or a 200 whose body was incomplete.

    .venv/bin/python load-tests/damaged_files.py --count 3000 --seed 10

The CI regression test (tests/e2e/test_damaged_serving.py) runs the same code with a fixed
seed and a small count. Run from the repository root (it imports `tests.support`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from servers import pacs_server

from tests.support.mutations import mutants
from tests.support.serving import run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="keep the server's data folder")
    args = parser.parse_args()
    started = time.monotonic()
    with pacs_server(keep=args.keep, env={"PACS_PATIENT_MISMATCH": "warn"}) as server:
        base = server.url.removesuffix("/dicomweb")
        report = run(base, mutants(args.seed, args.count), args.threads)
    print(report.summary())
    print(f"{len(report.failures)} failure(s) in {time.monotonic() - started:.0f} s")
    for line in report.failures[:50]:
        print("  " + line)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
