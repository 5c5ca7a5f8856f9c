#!/usr/bin/env python3
"""Where an idle connection's bytes go: tracemalloc inside a broker holding N connections.

    python scripts/profile_memory.py                 # 3,000 idle connections, top 25 lines
    python scripts/profile_memory.py -n 10000 --top 40 --group filename

The broker runs in this process (uvloop, the `mqttd` command's GC settings, persistence
off); loadgen (built as scripts/bench.py builds it) opens the connections and holds them.
Prints the process's RSS growth per connection next to what tracemalloc attributes to
each source line (Python objects and uvloop's PyMem allocations; the kernel's socket
buffers are not in RSS at all). Python's own allocator keeps freed blocks in its arenas,
so RSS per connection is a little above the traced bytes per connection.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import subprocess
import sys
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import build_loadgen  # noqa: E402

from mqttd.app import App, ephemeral_config  # noqa: E402
from mqttd.runtime import tune_gc  # noqa: E402


def rss_kb() -> int:
    """This process's resident set size in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def measure(n: int, top: int, group: str, frames: int) -> None:
    """Start a broker, let loadgen open and hold `n` connections, compare snapshots."""
    binary = build_loadgen()
    config = ephemeral_config()
    config.log.level = "warning"
    app = App(config)
    await app.start()
    try:
        gc.collect()
        tracemalloc.start(frames)
        before, rss0 = tracemalloc.take_snapshot(), rss_kb()
        hold = 3.0 + n / 2000
        proc = await asyncio.create_subprocess_exec(
            str(binary),
            "-p",
            str(app.port),
            "-s",
            "conns",
            "-C",
            str(n),
            "-c",
            "200",
            "-t",
            str(hold),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        await asyncio.sleep(hold / 2 + n / 4000)
        gc.collect()
        after, rss1 = tracemalloc.take_snapshot(), rss_kb()
        _, err = await proc.communicate()
        print(err.decode().strip())
    finally:
        await app.stop()
    stats = after.compare_to(before, group)
    total = sum(s.size_diff for s in stats)
    rss_per_conn = (rss1 - rss0) * 1024 / n
    print(f"\n{n} connections: RSS +{rss_per_conn:,.0f} B/conn (with tracemalloc's own overhead)")
    print(f"traced: +{total / n:,.0f} B/conn\n")
    for s in stats[:top]:
        if s.size_diff <= 0:
            continue
        where = s.traceback.format()[-1].strip() if group == "traceback" else str(s.traceback)
        print(f"{s.size_diff / n:8.1f} B/conn  {s.count_diff / n:5.2f} blocks/conn  {where}")


def main() -> int:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=3000, help="connections (default 3000)")
    p.add_argument("--top", type=int, default=25, help="lines to print (default 25)")
    p.add_argument("--group", choices=("lineno", "filename", "traceback"), default="lineno")
    p.add_argument("--frames", type=int, default=1, help="traceback depth (default 1)")
    args = p.parse_args()
    tune_gc()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a default dependency on Linux
        asyncio.run(measure(args.n, args.top, args.group, args.frames))
    else:
        uvloop.run(measure(args.n, args.top, args.group, args.frames))
    return 0


if __name__ == "__main__":
    sys.exit(main())
