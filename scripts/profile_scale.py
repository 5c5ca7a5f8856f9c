#!/usr/bin/env python3
"""Scale checks of mqttd (benchmarks, not tests): many idle connections, many retained.

    python scripts/profile_scale.py conns 50000        # idle connections held: RSS, rate
    python scripts/profile_scale.py retained 1000000   # subscribe to "#" over 1M retained

conns: a fresh broker (bench.py's configuration) and loadgen's `conns` scenario, split
over several loadgen processes and two loopback addresses when one cannot open them all
(a process is limited by RLIMIT_NOFILE, and one client address to one server port by the
ephemeral port range, ~28,000 ports). The broker needs one descriptor per connection: when
the hard RLIMIT_NOFILE is below the count asked for (and cannot be raised without
CAP_SYS_RESOURCE), the check runs with as many as the limit allows and says so. Reports
connected/alive, broker RSS per connection (from /proc) and connects per second.

retained: the broker runs in this process, its retained store filled directly with N
messages (64-byte payloads, topics r/<i // 1000>/<i>, no store: persistence off), then a
client in a child process connects, subscribes to "#" at QoS 0 and counts PUBLISH packets
until all N arrived. Reports the fill time, the process RSS, and the time from SUBSCRIBE to
the last retained message (end to end: match, encoding, socket, the client's reading).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # scripts/bench.py, the harness this reuses

PAGE_KB = 4


def rss_kb(pid: int) -> int:
    """Resident set size of a process, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


# ---------------------------------------------------------------- conns

PER_LOAD_PROCESS = 12_000  # connections per loadgen process (fds and ephemeral ports)


def check_conns(count: int, hold: float) -> int:
    """Hold `count` idle connections to a fresh broker; print RSS/connection and rate."""
    nofile = bench.raise_nofile_limit()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    usable = nofile - 200  # the broker's own descriptors (listeners, epoll, files)
    if count > usable:
        print(
            f"# {count:,} connections asked, but RLIMIT_NOFILE is {nofile:,} (hard limit "
            f"{hard:,}, and raising it needs CAP_SYS_RESOURCE, which this machine does not "
            f"grant): holding {usable:,} instead"
        )
        count = usable
    binary = bench.build_loadgen()
    opts = bench.MqttdOptions.detect(bench.mqttd_python(None))
    base = bench.mqttd_command(opts, False, True)

    def command(port: int, tmp: Path) -> list[str]:
        # A second listener on 127.0.0.2 (loopback too) gives the loadgen processes
        # that connect there an ephemeral port space of their own. `--host` would move
        # every listener: it is dropped, and `-p` sets the first listener's port.
        argv = base(port, tmp)
        conf = tmp / "mqttd.toml"
        conf.write_text(
            conf.read_text()
            + f"""
[[listeners]]
name = "lo1"
host = "127.0.0.1"
port = {port}

[[listeners]]
name = "lo2"
host = "127.0.0.2"
port = {port}
"""
        )
        i = argv.index("--host")
        return argv[:i] + argv[i + 2 :]

    two_addresses = count > PER_LOAD_PROCESS * 2
    spec = bench.BrokerSpec("mqttd", command if two_addresses else base)
    with bench.running_broker(spec) as (pid, port):
        before = rss_kb(pid)
        cpu0 = cpu_s(pid)
        parts = split(count, two_addresses)
        t0 = time.monotonic()
        procs = [
            subprocess.Popen(
                [
                    str(binary),
                    *("-H", host, "-p", str(port), "-s", "conns", "-C", str(n)),
                    *("-t", str(hold), "-c", "200", "-T", str(int(hold) + 120)),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for host, n in parts
        ]
        # The connect phase ends when every process reports; RSS is read mid-hold.
        time.sleep(min(hold / 2, 5) + count / 5000)
        held = rss_kb(pid)
        outs = [p.communicate()[0] for p in procs]
        wall = time.monotonic() - t0
        cpu = cpu_s(pid) - cpu0
    results = [bench.parse_result(o) for o in outs]
    connected = int(sum(bench.num(r, "connected") or 0 for r in results))
    alive = int(sum(bench.num(r, "alive") or 0 for r in results))
    connect_s = max(bench.num(r, "connect_s") or 0 for r in results)
    print(f"# idle connections: {count:,} asked over {len(parts)} loadgen process(es)")
    print(f"connected {connected:,}, alive after the hold {alive:,}")
    print(f"broker RSS: {before:,} kB before, {held:,} kB holding them")
    if connected:
        print(f"RSS per connection: {(held - before) * 1024 / connected:,.0f} B")
    if connect_s:
        print(f"connects/s (all processes, first to last): {connected / connect_s:,.0f}")
    print(f"broker CPU {cpu:.1f} s over {wall:.1f} s")
    return 0 if connected == count else 1


def split(count: int, two_addresses: bool) -> list[tuple[str, int]]:
    """(server address, connections) per loadgen process."""
    parts: list[tuple[str, int]] = []
    hosts = ("127.0.0.1", "127.0.0.2") if two_addresses else ("127.0.0.1",)
    i = 0
    while count > 0:
        n = min(count, PER_LOAD_PROCESS)
        parts.append((hosts[i % len(hosts)], n))
        count -= n
        i += 1
    return parts


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / 100.0


# ---------------------------------------------------------------- retained

CLIENT = r"""
import socket, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((host, port))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
cid = b"scale-retained"
body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
s.sendall(bytes((0x10, len(body))) + body)
assert s.recv(4)[0] == 0x20
t0 = time.perf_counter()
s.sendall(b"\x82\x06\x00\x01\x00\x01#\x00")
buf = b""
seen = -1  # the SUBACK counts as one packet
pos = 0
while seen < count:
    chunk = s.recv(1 << 20)
    if not chunk:
        break
    buf = buf[pos:] + chunk
    pos = 0
    n = len(buf)
    while True:
        if n - pos < 2:
            break
        length = 0
        mult = 1
        i = pos + 1
        while i < n:
            b = buf[i]
            length += (b & 0x7F) * mult
            mult <<= 7
            i += 1
            if b < 0x80:
                break
        else:
            break
        if i + length > n:
            break
        seen += 1
        pos = i + length
print(seen, time.perf_counter() - t0)
"""


def check_retained(count: int) -> int:
    """Fill the retained store in-process, time a real client's subscribe to "#"."""
    from mqttd.app import ephemeral_config, running
    from mqttd.broker.message import Message

    config = ephemeral_config()
    config.listeners[0].host = "127.0.0.1"
    config.limits.max_queued_messages = 0  # deliveries are queued, never dropped
    payload = bytes(64)

    async def main() -> int:
        async with running(config) as app:
            retained = app.broker.retained
            rss0 = rss_kb_self()
            t = time.perf_counter()
            for i in range(count):
                topic = f"r/{i // 1000}/{i}"
                retained.set(topic, Message(topic, payload, 0, True))
            fill = time.perf_counter() - t
            rss1 = rss_kb_self()
            print(f"# {count:,} retained messages, 64-byte payloads, topics r/<i // 1000>/<i>")
            print(f"filled in {fill:.1f} s; process RSS {rss0 / 1024:.0f} -> {rss1 / 1024:.0f} MiB")
            print(f"  per retained message: {(rss1 - rss0) * 1024 / count:,.0f} B")
            with tempfile.TemporaryDirectory() as tmp:
                script = Path(tmp) / "client.py"
                script.write_text(CLIENT)
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(script),
                    app.host,
                    str(app.port),
                    str(count),
                    stdout=subprocess.PIPE,
                )
                t = time.perf_counter()
                out, _ = await proc.communicate()
                wall = time.perf_counter() - t
            seen, took = out.split()
            print(
                f"SUBSCRIBE '#' -> last retained message: {float(took):.1f} s for "
                f"{int(seen):,} messages ({int(seen) / float(took):,.0f} msg/s)"
            )
            print(f"peak process RSS {peak_rss_kb() / 1024:.0f} MiB; client wall {wall:.1f} s")
            return 0 if int(seen) == count else 1

    return asyncio.run(main())


def rss_kb_self() -> int:
    """This process's RSS in kB."""
    return rss_kb(os_getpid())


def os_getpid() -> int:
    """The pid (a function so the import stays local)."""
    import os

    return os.getpid()


def peak_rss_kb() -> int:
    """This process's peak RSS (ru_maxrss, kB on Linux)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="check", required=True)
    c = sub.add_parser("conns", help="hold many idle connections")
    c.add_argument("count", type=int, nargs="?", default=50_000)
    c.add_argument("--hold", type=float, default=10.0, help="seconds to hold them")
    r = sub.add_parser("retained", help="subscribe to '#' over many retained messages")
    r.add_argument("count", type=int, nargs="?", default=1_000_000)
    args = p.parse_args(argv)
    socket.setdefaulttimeout(None)
    if args.check == "conns":
        return check_conns(args.count, args.hold)
    return check_retained(args.count)


if __name__ == "__main__":
    sys.exit(main())
