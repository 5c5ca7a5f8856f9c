#!/usr/bin/env python3
"""Profile a running mqttd under an loadgen scenario with py-spy; print where time goes.

    python scripts/profile_broker.py fan-in-q1                 # one of bench.py's scenarios
    python scripts/profile_broker.py conns --top 40
    python scripts/profile_broker.py fan-out-q1 -m 8000

A fresh broker is started exactly as `scripts/bench.py` starts it (same generated config),
py-spy samples it for the whole loadgen run, and the collapsed stacks are folded into two
tables: self time per function (where the CPU is spent) and inclusive time (what the
callees of a function cost together). py-spy leaves out the samples of the loop waiting in
epoll, so the percentages read as "share of the broker's busy time".

py-spy is not a project dependency: it is looked for in /tmp/pyspy-venv (create it with
`python3 -m venv /tmp/pyspy-venv && /tmp/pyspy-venv/bin/pip install py-spy`), or give
`--py-spy PATH`. Sampling a process needs ptrace rights (root, or ptrace_scope 0).
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # scripts/bench.py, the harness this reuses

DEFAULT_PY_SPY = Path("/tmp/pyspy-venv/bin/py-spy")
# py-spy leaves out samples of a thread blocked in a system call (epoll_wait) unless
# --idle is given; a leaf frame of the loop itself is therefore uvloop's C code at work
# (socket reads and writes, callback dispatch), shown under this name.
LOOP_FRAMES = ("Runner.run (asyncio/runners.py", "run_until_complete (asyncio")
LOOP_LABEL = "(event loop C code: socket reads/writes, callback dispatch)"


def fold(raw: Path) -> tuple[collections.Counter[str], collections.Counter[str], int]:
    """Self and inclusive sample counts per function from py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        leaf = frames[-1]
        if leaf.startswith(LOOP_FRAMES):
            leaf = LOOP_LABEL
        own[leaf] += count
        for name in set(frames):
            inclusive[name] += count
    return own, inclusive, total


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenario", choices=bench.profile_scenarios())
    p.add_argument("-m", "--messages", type=int, default=0, help="loadgen -m (default: 20%%)")
    p.add_argument("--top", type=int, default=30, help="rows per table (default 30)")
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--py-spy", type=Path, default=DEFAULT_PY_SPY)
    p.add_argument("--extra", default="", help="more loadgen arguments, space separated")
    p.add_argument("--raw", type=Path, default=None, help="keep py-spy's collapsed stacks here")
    p.add_argument(
        "--persist", action="store_true", help="SQLite persistence on (implied by persist-q1)"
    )
    p.add_argument(
        "--gil",
        action="store_true",
        help="only samples of the thread holding the GIL (what a thread takes from the loop)",
    )
    p.add_argument("--lines", action="store_true", help="per line, not per function")
    p.add_argument(
        "--tree", type=Path, default=None, help="profile the mqttd/ package in this directory"
    )
    args = p.parse_args(argv)
    if not args.py_spy.exists():
        raise SystemExit(f"{args.py_spy} missing: see this script's docstring")

    bench.raise_nofile_limit()
    binary = bench.build_loadgen()
    opts = bench.MqttdOptions.detect(bench.mqttd_python(None))
    sc = bench.SCENARIO_BY_NAME[args.scenario]
    persist = args.persist or bench.persisted(sc)
    command = bench.mqttd_command(opts, persist, True)
    if args.tree is not None:
        tree, plain = args.tree, command

        def command(port: int, tmp: Path) -> list[str]:
            return ["env", f"PYTHONPATH={tree}", *plain(port, tmp)]

    spec = bench.BrokerSpec("mqttd-persist" if persist else "mqttd", command)
    load_args = [*sc.args, *args.extra.split()]
    messages = args.messages or sc.messages // 5
    if sc.messages:
        load_args += ["-m", str(messages)]

    with (
        tempfile.TemporaryDirectory(prefix="profile-") as tmp,
        bench.running_broker(spec) as (
            pid,
            port,
        ),
    ):
        raw = Path(tmp) / "stacks.txt"
        spy = subprocess.Popen(
            [
                *(str(args.py_spy), "record", "--pid", str(pid), "--format", "raw"),
                *("-o", str(raw), "--rate", str(args.rate), "--nonblocking"),
                *(() if args.lines else ("--function",)),
                *(("--gil",) if args.gil else ()),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.0)  # py-spy attaches
        result, _, _, _, _ = bench.run_load(
            binary, ["-p", str(port), "-R", str(pid), *load_args], 120
        )
        spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
        _, err = spy.communicate(timeout=60)
        if not raw.exists():
            print(err.decode(errors="replace"))
            return 1
        own, inclusive, total = fold(raw)
        if args.raw is not None:
            args.raw.write_bytes(raw.read_bytes())

    busy = max(1, total)
    print(f"# {args.scenario}{' (SQLite)' if persist else ''}: loadgen {' '.join(load_args)}")
    keys = ("msgs_per_s", "conns_per_s", "bytes_per_conn", "p99_us", "broker_cpu_s", "lost")
    print("# RESULT " + " ".join(f"{k}={result[k]}" for k in keys if k in result))
    print(f"# busy samples: {total} (py-spy leaves out samples of the loop waiting in epoll)")
    print("\n## self time (% of busy samples)")
    for name, n in own.most_common(args.top):
        print(f"{100.0 * n / busy:6.2f}%  {name}")
    print("\n## inclusive time (% of busy samples)")
    for name, n in inclusive.most_common(args.top):
        print(f"{100.0 * n / busy:6.2f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
