"""QoS 1 throughput of a shared subscription ($share) with a member on each of two nodes.

Starts nats-server (-js, temp store) and two mqttd nodes (persistence off, durable
sessions on: the cluster's default); one member of "$share/bench/bench/#" on each node
(clean 3.1.1 sessions that PUBACK each message as it comes) and publishers on node b
sending QoS 1 with a window of unacknowledged PUBLISHes each, 64-byte payloads. Prints
the messages per second the group received, how they split between the nodes, and any
message missing or received twice.

    python scripts/bench_cluster_share.py [--messages 20000] [--rounds 3] [--tree DIR]

`--tree DIR` runs the nodes from another checkout of mqttd (to compare two versions
with the same client side).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"
GROUP = "$share/bench/bench/#"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def packet(first: int, body: bytes) -> bytes:
    out = bytearray([first])
    n = len(body)
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out) + body


def string(s: str) -> bytes:
    data = s.encode()
    return struct.pack("!H", len(data)) + data


def connect(client_id: str) -> bytes:
    return packet(
        0x10, string("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 60) + string(client_id)
    )


async def read_packets(reader: asyncio.StreamReader):  # type: ignore[no-untyped-def]
    while True:
        first = (await reader.readexactly(1))[0]
        n, shift = 0, 0
        while True:
            byte = (await reader.readexactly(1))[0]
            n |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        yield first, await reader.readexactly(n)


async def open_client(port: int, client_id: str):  # type: ignore[no-untyped-def]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(connect(client_id))
    packets = read_packets(reader)
    first, _ = await packets.__anext__()
    assert first >> 4 == 2, "no CONNACK"
    return writer, packets


async def run(
    a: int, b: int, messages: int, publishers: int, window: int
) -> tuple[float, Counter[str], int, int]:
    members = []
    for name, port in (("a", a), ("b", b)):
        writer, packets = await open_client(port, f"member-{name}")
        writer.write(packet(0x82, struct.pack("!H", 1) + string(GROUP) + b"\x01"))
        async for first, _ in packets:
            if first >> 4 == 9:
                break
        members.append((name, writer, packets))
    await asyncio.sleep(1.5)  # both nodes pull from the group's consumer
    each = messages // publishers
    messages = each * publishers
    seen: Counter[bytes] = Counter()
    per_node: Counter[str] = Counter()
    done = asyncio.Event()

    async def member(name: str, writer: asyncio.StreamWriter, packets) -> None:  # type: ignore[no-untyped-def]
        async for first, body in packets:
            if first >> 4 != 3:
                continue
            (tlen,) = struct.unpack_from("!H", body)
            if (first >> 1) & 3:
                writer.write(packet(0x40, body[2 + tlen : 4 + tlen]))
                key = body[4 + tlen : 12 + tlen]
            else:
                key = body[2 + tlen : 10 + tlen]
            seen[key] += 1
            per_node[name] += 1
            if len(seen) >= messages:
                done.set()

    async def publisher(index: int, count: int) -> None:
        writer, packets = await open_client(b, f"bench-pub-{index}")
        free = asyncio.Semaphore(window)

        async def acks() -> None:
            async for first, _ in packets:
                if first >> 4 == 4:
                    free.release()

        ack_task = asyncio.create_task(acks())
        for i in range(count):
            await free.acquire()
            pid = i % 65535 + 1
            body = struct.pack("!II", index, i) + b"x" * 56
            writer.write(packet(0x32, string(f"bench/{index}") + struct.pack("!H", pid) + body))
        await done.wait()
        ack_task.cancel()
        writer.close()

    tasks = [asyncio.create_task(member(*m)) for m in members]
    started = time.perf_counter()
    await asyncio.gather(*(publisher(i, each) for i in range(publishers)))
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - started
    await asyncio.sleep(0.5)  # duplicates still on their way
    for task in tasks:
        task.cancel()
    for _, writer, _ in members:
        writer.close()
    twice = sum(n - 1 for n in seen.values() if n > 1)
    return messages / elapsed, per_node, messages - len(seen), twice


def start_node(
    tmp: Path, nats_port: int, name: str, tree: Path
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = tmp / f"{name}.toml"
    config.write_text(
        f"""
[persistence]
enabled = false
[limits]
max_queued_messages = 0
[[listeners]]
name = "mqtt"
port = {port}
[cluster]
enabled = true
name = "bench"
node = "{name}"
urls = ["nats://127.0.0.1:{nats_port}"]
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "mqttd", "-c", str(config)],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"node {name} did not start")


def measure(args: argparse.Namespace) -> tuple[float, Counter[str], int, int]:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        nats_port = free_port()
        nats = subprocess.Popen(
            [NATS, "-a", "127.0.0.1", "-p", str(nats_port), "-js", "-sd", str(tmp / "js")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        procs = [nats]
        try:
            time.sleep(0.5)
            node_a, a = start_node(tmp, nats_port, "a", args.tree)
            node_b, b = start_node(tmp, nats_port, "b", args.tree)
            procs += [node_a, node_b]
            return asyncio.run(run(a, b, args.messages, args.publishers, args.window))
        finally:
            for proc in procs:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument(
        "--window", type=int, default=50, help="unacknowledged PUBLISHes per publisher"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tree", type=Path, default=ROOT, help="the mqttd checkout the nodes run")
    args = parser.parse_args()
    rates = []
    for _ in range(args.rounds):
        rate, per_node, missing, twice = measure(args)
        rates.append(rate)
        print(
            f"  {rate:,.0f} msg/s  node a {per_node['a']}, node b {per_node['b']}, "
            f"missing {missing}, twice {twice}",
            flush=True,
        )
    rates.sort()
    runs = ", ".join(f"{r:,.0f}" for r in rates)
    print(
        f"$share QoS 1, a member on each of 2 nodes: median {rates[len(rates) // 2]:,.0f} msg/s"
        f"  (runs: {runs})"
    )


if __name__ == "__main__":
    main()
