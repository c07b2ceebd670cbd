"""Coverage-guided fuzzing (atheris, libFuzzer) of what reads an uploaded body before
anything else: the multipart/related reader and the DICOM parser (tests/fuzz/targets).

Each target runs in its own process for the suite's time budget, from a seed corpus (for
the parser: pydicom's sample files in several transfer syntaxes) and the inputs that once
found a bug (tests/fuzz/regressions/<target>/, replayed first). A crash, a hang (over 10 s
on one input) or 1 GB of resident memory fails the test and leaves the input beside the
test's temporary files: copy it into the regressions folder once the bug is fixed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from tests.fuzz.budget import REPORT, Figures, seconds

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
SEEDS = {
    "parse_instance": [
        "rtplan.dcm",  # implicit VR, sequences, no pixel data
        "MR_small.dcm",  # explicit VR little endian, native pixels
        "MR_small_bigendian.dcm",
        "MR_small_RLE.dcm",  # encapsulated
        "SC_rgb_jpeg_gdcm.dcm",
        "JPEG2000.dcm",
        "image_dfl.dcm",  # deflated
        "SC_rgb_small_odd.dcm",
    ],
    "multipart": [],
}


# libFuzzer's memory limit reads the peak RSS from getrusage(), which Linux carries over
# execve(): a target started straight from pytest (1 GB resident late in the suite) would
# begin "out of memory". A launcher process in between gives the target a peak of its own.
FRESH_PEAK_RSS = [
    sys.executable,
    "-c",
    "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))",
]


@pytest.mark.parametrize("target", sorted(SEEDS))
def test_parser_survives_any_input(target: str, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"  # libFuzzer adds what it finds to the first folder
    corpus.mkdir()
    for name in SEEDS[target]:
        path = get_testdata_file(name)
        assert path, name
        shutil.copy(path, corpus / name)
    budget = max(1, round(seconds()))
    command = [
        *FRESH_PEAK_RSS,
        sys.executable,
        "-m",
        f"tests.fuzz.targets.{target}",
        f"-max_total_time={budget}",
        "-timeout=10",
        "-rss_limit_mb=1024",
        f"-artifact_prefix={tmp_path}/",
        "-print_final_stats=1",
        str(corpus),
        str(HERE / "regressions" / target),
    ]
    start = time.monotonic()
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=budget + 120, check=False
    )
    output = result.stdout + result.stderr
    runs = re.search(r"stat::number_of_executed_units: (\d+)", output)
    executed = int(runs[1]) if runs else 0
    elapsed = time.monotonic() - start
    REPORT.append(Figures(f"atheris {target}", executed, executed, elapsed, "runs"))
    found = sorted(
        p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-"))
    )
    assert result.returncode == 0, f"{found} in {tmp_path}:\n{output[-6000:]}"
    assert executed > 0, output[-3000:]
