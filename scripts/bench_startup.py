#!/usr/bin/env python3
"""Retained-heavy start-up: how long mqttd takes to be ready, and its peak memory.

    python scripts/bench_startup.py                        # 1,000,000 retained, 100,000 sessions
    python scripts/bench_startup.py --retained 100000 --sessions 10000 --rounds 1
    python scripts/bench_startup.py --db .bench/startup.db # keep (and reuse) the database

Builds (once, or reuses with --db) an mqttd SQLite database with scripts/bench_store.py's
data set: N retained messages (64-byte payloads on fleet/<i // 1000>/<i % 1000>/state,
each from its own publisher) and M persistent sessions (MQTT 3.1.1 clean session 0,
disconnected, two QoS 1 subscriptions and one queued QoS 1 message each), then
starts `python -m mqttd --db FILE` as the project's CLI does, --rounds times, and reports
per round the seconds from the process start to the `mqttd ready` log line, the
process's peak RSS (VmHWM from /proc, read at the ready line, in MiB and in decimal MB)
and the CPU seconds it used until then (all its threads: on a shared machine the time
to ready moves with the other work, the CPU seconds much less), and their medians. The
database is copied to a fresh file for every round, so each start reads the same state
(a start rewrites the sessions' disconnect times).

`bench_store.py load` times the store and `Broker.start()` inside one process; this
script times what an operator waits for: the `mqttd` command from its start to ready.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

READY = "mqttd ready"


def build(path: Path, retained: int, sessions: int) -> None:
    """Create an mqttd database at `path` (bench_store.py's data set, module docstring)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_store import fill

    fill(path, retained, sessions)


def peak_rss_kb(pid: int) -> int:
    """The process's peak resident set size (VmHWM), in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the process so far, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_once(db: Path, timeout: float) -> tuple[float, int, float, str]:
    """Start mqttd on `db`; (seconds to ready, peak RSS kB, CPU seconds, the 'loaded'
    log line)."""
    config = db.with_suffix(".toml")
    config.write_text('[log]\nlevel = "info"\n')
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mqttd", "-c", str(config), "-p", "0", "--db", str(db)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    loaded = ""
    try:
        assert proc.stdout is not None
        deadline = started + timeout
        for line in proc.stdout:
            if "loaded" in line and "retained" in line:
                loaded = line.strip()
            if READY in line:
                took = time.perf_counter() - started
                return took, peak_rss_kb(proc.pid), cpu_seconds(proc.pid), loaded
            if time.perf_counter() > deadline:
                break
        raise RuntimeError(f"mqttd did not get ready (exit code {proc.poll()})")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--retained", type=int, default=1_000_000)
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--db", type=Path, help="database to build once and reuse")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mqttd-startup-") as tmp:
        source = args.db or Path(tmp) / "source.db"
        if not source.exists():
            t0 = time.perf_counter()
            build(source, args.retained, args.sessions)
            print(
                f"# built {source} ({source.stat().st_size / 2**20:,.0f} MiB) in "
                f"{time.perf_counter() - t0:.1f} s"
            )
        print(
            f"# {args.retained:,} retained, {args.sessions:,} sessions; load average "
            f"{os.getloadavg()[0]:.2f}"
        )
        times: list[float] = []
        peaks: list[int] = []
        cpus: list[float] = []
        for i in range(args.rounds):
            db = Path(tmp) / "run.db"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            shutil.copyfile(source, db)
            took, peak, cpu, loaded = start_once(db, args.timeout)
            times.append(took)
            peaks.append(peak)
            cpus.append(cpu)
            print(
                f"round {i + 1}: ready in {took:.2f} s, peak RSS {peak / 1024:,.0f} MiB "
                f"({peak * 1024 / 1e6:,.0f} MB), CPU {cpu:.2f} s"
            )
            if loaded:
                print(f"  {loaded}")
        peak = statistics.median(peaks)
        print(
            f"median: ready in {statistics.median(times):.2f} s, peak RSS {peak / 1024:,.0f} MiB "
            f"({peak * 1024 / 1e6:,.0f} MB), CPU {statistics.median(cpus):.2f} s; load average "
            f"{os.getloadavg()[0]:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
