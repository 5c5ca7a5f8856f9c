"""QoS 1 throughput to a persistent session across two cluster nodes, durable or not.

Starts nats-server (-js, temp store) and two mqttd nodes (persistence off) for each
setting of `[cluster] durable_sessions`; a persistent 3.1.1 subscriber on node a, and
publishers on node b sending QoS 1 with a window of unacknowledged PUBLISHes each.
Prints the messages per second the subscriber received (PUBACKed as they come). The
nodes queue without bound (`max_queued_messages = 0`): back-pressure does not cross
nodes, so a bounded queue on node a would drop what node b routes faster than a sends.

    python scripts/bench_cluster_sessions.py [--messages 20000] [--publishers 4]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"


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


def connect(client_id: str, clean: bool) -> bytes:
    flags = 0x02 if clean else 0x00
    return packet(
        0x10, string("MQTT") + bytes([4, flags]) + struct.pack("!H", 60) + string(client_id)
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


async def open_client(port: int, client_id: str, clean: bool = True):  # type: ignore[no-untyped-def]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(connect(client_id, clean))
    packets = read_packets(reader)
    first, _ = await packets.__anext__()
    assert first >> 4 == 2, "no CONNACK"
    return reader, writer, packets


async def run(a: int, b: int, messages: int, publishers: int, window: int) -> float:
    _, sub_w, sub_packets = await open_client(a, "bench-sub", clean=False)
    sub_w.write(packet(0x82, struct.pack("!H", 1) + string("bench/#") + b"\x01"))
    async for first, _ in sub_packets:
        if first >> 4 == 9:
            break
    await asyncio.sleep(1.0)  # the subscription reaches node b
    received = 0
    done = asyncio.Event()

    async def subscriber() -> None:
        nonlocal received
        async for first, body in sub_packets:
            if first >> 4 != 3:
                continue
            (tlen,) = struct.unpack_from("!H", body)
            if (first >> 1) & 3:
                sub_w.write(packet(0x40, body[2 + tlen : 4 + tlen]))
            received += 1
            if received >= messages:
                done.set()
                return

    async def publisher(index: int, count: int) -> None:
        _, writer, packets = await open_client(b, f"bench-pub-{index}")
        free = asyncio.Semaphore(window)

        async def acks() -> None:
            async for first, _ in packets:
                if first >> 4 == 4:
                    free.release()

        ack_task = asyncio.create_task(acks())
        for i in range(count):
            await free.acquire()
            pid = i % 65535 + 1
            writer.write(
                packet(0x32, string(f"bench/{index}") + struct.pack("!H", pid) + b"x" * 64)
            )
        await done.wait()
        ack_task.cancel()
        writer.close()

    sub_task = asyncio.create_task(subscriber())
    started = time.perf_counter()
    each = messages // publishers
    messages = each * publishers
    await asyncio.gather(*(publisher(i, each) for i in range(publishers)))
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - started
    sub_task.cancel()
    sub_w.close()
    return messages / elapsed


def start_node(
    tmp: Path, nats_port: int, name: str, durable: bool
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
durable_sessions = {"true" if durable else "false"}
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "mqttd", "-c", str(config)],
        cwd=ROOT,
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


def measure(durable: bool, args: argparse.Namespace) -> float:
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
            node_a, a = start_node(tmp, nats_port, "a", durable)
            node_b, b = start_node(tmp, nats_port, "b", durable)
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
    args = parser.parse_args()
    for durable in (False, True):
        rates = [measure(durable, args) for _ in range(args.rounds)]
        rates.sort()
        runs = ", ".join(f"{r:,.0f}" for r in rates)
        print(
            f"durable_sessions={str(durable).lower():5}  QoS 1 to a persistent session "
            f"across 2 nodes: median {rates[len(rates) // 2]:,.0f} msg/s  (runs: {runs})"
        )


if __name__ == "__main__":
    main()
