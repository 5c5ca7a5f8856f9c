"""The benchmark's load generator (scripts/loadgen/loadgen.c) builds, connects and counts right.

Not a timing test: it proves that the figures of `python scripts/bench.py` come from a generator
that talks MQTT 3.1.1 and 5.0 at every QoS to mqttd, and that its lost / duplicated /
out-of-order counts see what a broker does wrong (a fake broker drops, repeats and swaps).
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import MqttdProcess


def run(binary: Path, port: int, *args: str, pid: int = 0) -> dict[str, Any]:
    """One loadgen run; its stdout's last line is the JSON result."""
    argv = [str(binary), "-p", str(port), "-T", "20", *args]
    if pid:
        argv += ["-R", str(pid)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=40)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["_exit"] = proc.returncode
    result["_stderr"] = proc.stderr
    return result


@pytest.mark.parametrize(
    "args",
    [
        ("-s", "fan-in", "-P", "4", "-q", "0", "-m", "20000"),
        ("-s", "fan-in", "-P", "4", "-q", "1", "-m", "20000"),
        ("-s", "fan-in", "-P", "2", "-q", "2", "-m", "5000", "-V", "5"),
        ("-s", "fan-out", "-S", "10", "-q", "1", "-m", "1000", "-V", "5", "-W", "1000"),
        ("-s", "pairs", "-N", "10", "-q", "1", "-m", "5000", "-x", "60"),
        ("-s", "fan-in", "-P", "2", "-q", "1", "-m", "400", "-r", "2000", "-j", "2"),
    ],
    ids=["fan-in-q0", "fan-in-q1", "fan-in-q2-v5", "fan-out-q1-v5", "pairs-persistent", "rate"],
)
def test_loadgen_delivers_every_message_through_mqttd_once_and_in_order(
    loadgen: Path, mqttd_process: MqttdProcess, args: tuple[str, ...]
) -> None:
    r = run(loadgen, mqttd_process.port, *args, pid=mqttd_process.pid)
    assert r["_exit"] == 0, r["_stderr"]
    assert r["delivered"] == r["expected"] > 0
    assert (r["lost"], r["dup"], r["ooo"], r["bad"]) == (0, 0, 0, 0)
    assert r["p50_us"] > 0 and r["p99_us"] >= r["p50_us"]
    assert r["broker_cpu_s"] >= 0 and r["gen_cpu_s"] >= 0


def test_loadgen_rate_limit_offers_the_asked_rate(
    loadgen: Path, mqttd_process: MqttdProcess
) -> None:
    r = run(
        loadgen, mqttd_process.port, "-s", "fan-in", "-P", "2", "-q", "1", "-m", "600", "-r", "1000"
    )
    assert r["_exit"] == 0, r["_stderr"]
    # 600 messages at 1,000 msg/s take about 0.6 s: not much faster, however quick the broker
    assert 0.5 <= r["elapsed_s"] < 5


def test_loadgen_holds_idle_connections_and_measures_the_broker(
    loadgen: Path, mqttd_process: MqttdProcess
) -> None:
    r = run(
        loadgen,
        mqttd_process.port,
        "-s",
        "conns",
        "-C",
        "300",
        "-c",
        "50",
        "-t",
        "0.3",
        pid=mqttd_process.pid,
    )
    assert r["_exit"] == 0, r["_stderr"]
    assert r["connected"] == r["alive"] == 300 and r["failed"] == 0
    assert r["conns_per_s"] > 0 and r["rss_before_kb"] > 0 and r["broker_us_per_conn"] > 0


# ------------------------------------------------------------------ a broker that misbehaves


def _read_packet(f: Any) -> tuple[int, bytes] | None:
    head = f.read(1)
    if not head:
        return None
    length, shift = 0, 0
    while True:
        b = f.read(1)[0]
        length |= (b & 127) << shift
        shift += 7
        if not b & 128:
            break
    return head[0], f.read(length)


def _encode(first: int, body: bytes) -> bytes:
    out, n = bytearray([first]), len(body)
    while True:
        out.append((n & 127) | (128 if n > 127 else 0))
        n >>= 7
        if not n:
            return bytes(out) + body


@pytest.fixture
def faulty_broker() -> Iterator[int]:
    """A one-subscriber, one-publisher MQTT 3.1.1 'broker' that forwards QoS 1 publishes but
    drops sequence 5, sends sequence 7 twice and swaps 10 and 11."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    subscriber: list[socket.socket] = []
    ready = threading.Event()
    held: list[bytes] = []

    def serve(conn: socket.socket) -> None:
        f = conn.makefile("rb")
        while (pkt := _read_packet(f)) is not None:
            kind, body = pkt
            if kind == 0x10:
                conn.sendall(b"\x20\x02\x00\x00")
            elif kind == 0x82:
                subscriber.append(conn)
                conn.sendall(b"\x90\x03" + body[:2] + b"\x01")
                ready.set()
            elif kind >> 4 == 3:
                topic_len = struct.unpack(">H", body[:2])[0]
                pid = body[2 + topic_len : 4 + topic_len]
                seq = struct.unpack("<Q", body[4 + topic_len + 8 : 4 + topic_len + 16])[0]
                conn.sendall(b"\x40\x02" + pid)  # PUBACK to the publisher
                ready.wait(5)
                out = _encode(kind, body)
                if seq == 5:
                    continue
                if seq == 10:
                    held.append(out)
                    continue
                subscriber[0].sendall(out * (2 if seq == 7 else 1))
                if seq == 11:
                    subscriber[0].sendall(held.pop())
            elif kind == 0xC0:
                conn.sendall(b"\xd0\x00")
            elif kind == 0xE0:
                break
        conn.close()

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield port
    listener.close()


def test_loadgen_counts_lost_duplicated_and_out_of_order_messages(
    loadgen: Path, faulty_broker: int
) -> None:
    r = run(loadgen, faulty_broker, "-s", "fan-in", "-P", "1", "-q", "1", "-m", "20", "-D", "0.5")
    assert r["expected"] == 20 and r["sent"] == 20
    assert (r["lost"], r["dup"], r["ooo"]) == (1, 1, 1)
    assert r["delivered"] == 20  # 18 distinct + 1 duplicate + the late one
