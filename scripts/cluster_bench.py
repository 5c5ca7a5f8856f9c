"""What the two-node cluster benchmarks share: nats-server and two mqttd nodes started on
free ports (and killed), and a bare MQTT 3.1.1 client side (packets built and read by
hand, so the client costs little next to the brokers).

Used by bench_cluster_sessions.py and bench_cluster_share.py (scripts/ is their path).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"

Packets = AsyncIterator[tuple[int, bytes]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def packet(first: int, body: bytes) -> bytes:
    """A packet: its first byte, the remaining length, `body`."""
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


def connect(client_id: str, clean: bool = True) -> bytes:
    flags = 0x02 if clean else 0x00
    return packet(
        0x10, string("MQTT") + bytes([4, flags]) + struct.pack("!H", 60) + string(client_id)
    )


async def read_packets(reader: asyncio.StreamReader) -> Packets:
    """(first byte, body) of each packet the broker sends."""
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


async def open_client(
    port: int, client_id: str, clean: bool = True
) -> tuple[asyncio.StreamWriter, Packets]:
    """A connected 3.1.1 client (its CONNACK read): its writer and its packets."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(connect(client_id, clean))
    packets = read_packets(reader)
    first, _ = await packets.__anext__()
    assert first >> 4 == 2, "no CONNACK"
    return writer, packets


def start_node(
    tmp: Path, nats_port: int, name: str, tree: Path, cluster_extra: str
) -> tuple[subprocess.Popen[bytes], int]:
    """A node of cluster "bench" (persistence off, queues unbounded: back-pressure does
    not cross nodes, so a bounded queue would drop what the other node routes faster
    than its subscriber takes it), run from the mqttd checkout `tree`."""
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
{cluster_extra}
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


@contextlib.contextmanager
def two_nodes(tree: Path = ROOT, cluster_extra: str = "") -> Iterator[tuple[int, int]]:
    """nats-server (-js, temp store) and nodes a and b: their MQTT ports; all killed after."""
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
            node_a, a = start_node(tmp, nats_port, "a", tree, cluster_extra)
            procs.append(node_a)
            node_b, b = start_node(tmp, nats_port, "b", tree, cluster_extra)
            procs.append(node_b)
            yield a, b
        finally:
            for proc in procs:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


async def publish_qos1(
    port: int,
    index: int,
    count: int,
    window: int,
    payload: Callable[[int], bytes],
    done: asyncio.Event,
) -> None:
    """Publisher `index` sends `count` QoS 1 messages on "bench/{index}" with at most
    `window` unacknowledged, then stays connected until `done`."""
    writer, packets = await open_client(port, f"bench-pub-{index}")
    free = asyncio.Semaphore(window)

    async def acks() -> None:
        async for first, _ in packets:
            if first >> 4 == 4:
                free.release()

    ack_task = asyncio.create_task(acks())
    topic = string(f"bench/{index}")
    for i in range(count):
        await free.acquire()
        pid = i % 65535 + 1
        writer.write(packet(0x32, topic + struct.pack("!H", pid) + payload(i)))
    await done.wait()
    ack_task.cancel()
    writer.close()
