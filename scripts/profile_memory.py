#!/usr/bin/env python3
"""Where an idle connection's bytes go: tracemalloc inside a broker holding N connections.

    python scripts/profile_memory.py                 # 3,000 idle connections, top 25 lines
    python scripts/profile_memory.py -n 10000 --top 40 --group filename
    python scripts/profile_memory.py -n 19000 --bare --no-trace  # uvloop's own floor
    python scripts/profile_memory.py -n 19000 --bare-epoll --no-trace  # one epoll's floor

The broker runs in this process (uvloop, the `mqttd` command's GC settings, persistence
off); loadgen (built as scripts/bench.py builds it) opens the connections and holds them.
Prints the process's RSS growth per connection next to what tracemalloc attributes to
each source line (Python objects and uvloop's PyMem allocations; the kernel's socket
buffers are not in RSS at all). Python's own allocator keeps freed blocks in its arenas,
so RSS per connection is a little above the traced bytes per connection.

`--bare` serves a protocol that only answers CONNECT instead of the broker: what the event
loop's transport costs by itself, the floor under any broker written on it.
`--bare-epoll` serves the same protocol with one `select.epoll` of ours registered in
the loop once and a non-blocking socket per connection in it (the shape of
mqttd/net/epoll_tcp.py): what a connection costs without a transport. `--no-trace`
measures RSS without tracemalloc (whose own bookkeeping inflates RSS).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import select
import socket
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import cast

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


class _Bare(asyncio.Protocol):
    """Answers a CONNECT with a CONNACK and does nothing else (`--bare`)."""

    __slots__ = ("transport",)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if data[:1] == b"\x10":
            self.transport.write(b"\x20\x02\x00\x00")


class _BareServer:
    """The `App` calls `measure` makes, for the bare protocol."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(_Bare, "127.0.0.1", 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


class _BareEpollServer:
    """`--bare-epoll`: a listening socket and one epoll in the loop; per connection only
    its fd (an int) in a dict and in the epoll. Answers CONNECT with CONNACK."""

    def __init__(self) -> None:
        self.port = 0
        self._listener = socket.socket()
        self._epoll = select.epoll()
        self._open: dict[int, None] = {}

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ls = self._listener
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ls.bind(("127.0.0.1", 0))
        ls.listen(1024)
        ls.setblocking(False)
        self.port = ls.getsockname()[1]
        loop.add_reader(ls.fileno(), self._accept)
        loop.add_reader(self._epoll.fileno(), self._ready)

    def _accept(self) -> None:
        accept = self._listener._accept  # type: ignore[attr-defined]
        while True:
            try:
                fd, _ = accept()
            except BlockingIOError:
                return
            os.set_blocking(fd, False)
            self._open[fd] = None
            self._epoll.register(fd, select.EPOLLIN)

    def _ready(self) -> None:
        for fd, _ in self._epoll.poll(0):
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                self._epoll.unregister(fd)
                del self._open[fd]
                os.close(fd)
            elif data[:1] == b"\x10":
                os.write(fd, b"\x20\x02\x00\x00")

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._listener.fileno())
        loop.remove_reader(self._epoll.fileno())
        self._listener.close()
        for fd in self._open:
            os.close(fd)
        self._epoll.close()


async def measure(n: int, top: int, group: str, frames: int, bare: str, trace: bool) -> None:
    """Start a broker, let loadgen open and hold `n` connections, compare snapshots."""
    binary = build_loadgen()
    app: App | _BareServer | _BareEpollServer
    if bare == "uvloop":
        app = _BareServer()
    elif bare == "epoll":
        app = _BareEpollServer()
    else:
        config = ephemeral_config()
        config.log.level = "warning"
        app = App(config)
    await app.start()
    try:
        gc.collect()
        if trace:
            tracemalloc.start(frames)
        before, rss0 = (tracemalloc.take_snapshot() if trace else None), rss_kb()
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
        rss1 = rss_kb()
        after = tracemalloc.take_snapshot() if trace else None
        _, err = await proc.communicate()
        print(err.decode().strip())
    finally:
        await app.stop()
    what = f"bare {bare} protocol" if bare else "broker"
    if before is None or after is None:
        print(f"\n{n} connections ({what}): RSS +{(rss1 - rss0) * 1024 / n:,.0f} B/conn")
        return
    stats = after.compare_to(before, group)
    total = sum(s.size_diff for s in stats)
    rss_per_conn = (rss1 - rss0) * 1024 / n
    print(
        f"\n{n} connections ({what}): RSS +{rss_per_conn:,.0f} B/conn "
        "(with tracemalloc's own overhead)"
    )
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
    p.add_argument("--bare", action="store_true", help="a do-nothing protocol, not the broker")
    p.add_argument("--bare-epoll", action="store_true", help="the same on one epoll, no transports")
    p.add_argument("--no-trace", action="store_true", help="RSS only, without tracemalloc")
    args = p.parse_args()
    tune_gc()
    bare = "epoll" if args.bare_epoll else "uvloop" if args.bare else ""
    run = measure(args.n, args.top, args.group, args.frames, bare, not args.no_trace)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a default dependency on Linux
        asyncio.run(run)
    else:
        uvloop.run(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
