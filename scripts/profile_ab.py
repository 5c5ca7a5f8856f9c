#!/usr/bin/env python3
"""Interleaved A/B runs of one loadgen scenario against two copies of mqttd.

    cp -r mqttd /tmp/mqttd-a/                                  # snapshot the baseline
    ... edit the work tree ...
    python scripts/profile_ab.py fan-in-q1 --a /tmp/mqttd-a --rounds 5

A is the package found under `--a` (a directory holding an `mqttd/` package), B the work
tree's (or `--b`). Runs alternate A B A B ..., each on a fresh broker started the way
`scripts/bench.py` starts mqttd (same generated config), with the same `-m` for both, so
a change is kept only when it wins against the drift of this shared machine. Prints each
run and the medians, and B/A.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # scripts/bench.py, the harness this reuses


def spec_for(
    name: str, tree: Path | None, opts: bench.MqttdOptions, persist: bool = False
) -> bench.BrokerSpec:
    """mqttd from `tree` (PYTHONPATH wins over the editable install), or the work tree;
    `persist`: with SQLite persistence on (`--db`), as bench.py's mqttd-persist."""
    base = bench.mqttd_command(opts, persist, True)

    def command(port: int, tmp: Path) -> list[str]:
        argv = base(port, tmp)
        return ["env", f"PYTHONPATH={tree}", *argv] if tree is not None else argv

    return bench.BrokerSpec(name, command)


KEYS: dict[str, tuple[str, ...]] = {
    "throughput": ("msgs_per_s", "msgs_per_broker_cpu_s", "p99_us"),
    "latency": ("p99_us", "p50_us", "msgs_per_broker_cpu_s"),
    "conns": ("conns_per_s", "bytes_per_conn", "broker_cpu_connect_s"),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenario", choices=bench.profile_scenarios())
    p.add_argument("--a", type=Path, required=True, help="directory holding the A mqttd/")
    p.add_argument("--b", type=Path, default=None, help="directory holding the B mqttd/")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("-m", "--messages", type=int, default=0, help="loadgen -m (default 20%%)")
    p.add_argument("--extra", default="", help="more loadgen arguments, space separated")
    p.add_argument(
        "--persist",
        action="store_true",
        help="SQLite persistence on for both (implied by persist-q1)",
    )
    args = p.parse_args(argv)

    bench.raise_nofile_limit()
    binary = bench.build_loadgen()
    opts = bench.MqttdOptions.detect(bench.mqttd_python(None))
    sc = bench.SCENARIO_BY_NAME[args.scenario]
    persist = args.persist or bench.persisted(sc)
    specs = {"A": spec_for("A", args.a, opts, persist), "B": spec_for("B", args.b, opts, persist)}
    load_args = [*sc.args, *args.extra.split()]
    if sc.messages:
        load_args += ["-m", str(args.messages or sc.messages // 5)]
    keys = KEYS[sc.kind]
    got: dict[str, dict[str, list[float]]] = {n: {k: [] for k in keys} for n in specs}
    for rnd in range(1, args.rounds + 1):
        for name, spec in specs.items():
            with bench.running_broker(spec) as (pid, port):
                result, _, _, _, out = bench.run_load(
                    binary, ["-p", str(port), "-R", str(pid), *load_args], 120
                )
            if not result or result.get("failed") or result.get("timed_out"):
                print(f"round {rnd} {name}: FAILED {out}", flush=True)
                continue
            row = []
            for k in keys:
                v = bench.num(result, k)
                if v is not None:
                    got[name][k].append(v)
                row.append(f"{k}={bench.fmt(v, 3 if v is not None and v < 10 else 0)}")
            lost = bench.num(result, "lost")
            print(f"round {rnd} {name}: {' '.join(row)} lost={bench.fmt(lost)}", flush=True)
    med: Callable[[list[float]], float | None] = bench.median
    what = f"{args.scenario}{', SQLite' if persist else ''}, {' '.join(load_args)}"
    print(f"\nmedians over {args.rounds} rounds ({what}):")
    for k in keys:
        a, b = med(got["A"][k]), med(got["B"][k])
        ratio = f"B/A {b / a:.3f}" if a and b else ""
        d = 3 if a is not None and a < 10 else 0
        print(f"  {k:<24} A {bench.fmt(a, d):>12}  B {bench.fmt(b, d):>12}  {ratio}")
    spread = {
        n: statistics.pstdev(v[keys[0]]) if len(v[keys[0]]) > 1 else 0 for n, v in got.items()
    }
    print(f"  stdev of {keys[0]}: A {spread['A']:,.0f}  B {spread['B']:,.0f}")
    print(f"  load average {bench.loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
