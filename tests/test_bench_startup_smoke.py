"""scripts/bench_startup.py runs end to end on a tiny data set and reports its figures.

Not a timing test: it proves the start-up benchmark builds its database, starts the
`mqttd` command on it, sees every retained message and session loaded, and prints the
ready time, the peak RSS in MiB and in decimal MB (the goal's unit) and the CPU seconds.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_startup_reports_ready_time_peak_and_cpu(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench_startup.py"),
            "--retained",
            "300",
            "--sessions",
            "20",
            "--rounds",
            "1",
            "--db",
            str(tmp_path / "startup.db"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "loaded 300 retained messages and 20 persistent sessions" in done.stdout
    figures = re.search(
        r"round 1: ready in ([\d.]+) s, peak RSS ([\d,]+) MiB \(([\d,]+) MB\), CPU ([\d.]+) s",
        done.stdout,
    )
    assert figures is not None, done.stdout
    mib, mb = (int(figures[i].replace(",", "")) for i in (2, 3))
    assert float(figures[1]) > 0 and float(figures[4]) > 0
    assert abs(mib * 2**20 / 1e6 - mb) <= 1  # the same peak, in both units
