"""Micro-benchmark of the MQTT codec: packets decoded and encoded per second.

    python scripts/bench_codec.py [--seconds 0.5] [--repeat 5]

Cases: a PUBLISH with a 64-byte payload on topic "sensors/0042/temperature" at QoS 0 and
QoS 1, MQTT 3.1.1 and 5.0 (and 5.0 with two properties), and a 5.0 CONNECT with a will
and a user name. Decoding is
timed two ways: "batch" feeds 1,000 packets in one call (a busy publisher filling a
64 KiB read), "single" feeds one packet per call (a quiet one). Each figure is the best
of --repeat runs of about --seconds each, timed in process CPU time so that other
processes on this shared machine slow the figures less (they still move by 10% or more).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mqttd.protocol import (
    Connect,
    PacketReader,
    Properties,
    Publish,
    Will,
    encode,
    encode_publish,
    publish_packet_id_offset,
    with_packet_id,
)

TOPIC = "sensors/0042/temperature"
PAYLOAD = bytes(range(64))
BATCH = 1000


def rate(run: Callable[[int], int], seconds: float, repeat: int) -> float:
    """Best packets/s over `repeat` timed runs; `run(n)` does n rounds, returns packets."""
    rounds = 1
    while True:  # calibrate: how many rounds take about `seconds`
        start = time.process_time()
        run(rounds)
        elapsed = time.process_time() - start
        if elapsed > seconds / 10:
            break
        rounds *= 4
    rounds = max(1, int(rounds * seconds / elapsed))
    best = 0.0
    for _ in range(repeat):
        start = time.process_time()
        packets = run(rounds)
        best = max(best, packets / (time.process_time() - start))
    return best


def decode_batch(encoded: bytes, level: int) -> Callable[[int], int]:
    chunk = encoded * BATCH

    def run(rounds: int) -> int:
        reader = PacketReader(protocol_level=level)
        feed = reader.feed
        for _ in range(rounds):
            feed(chunk)
        return rounds * BATCH

    return run


def decode_single(encoded: bytes, level: int | None) -> Callable[[int], int]:
    def run(rounds: int) -> int:
        reader = PacketReader(protocol_level=level)
        feed = reader.feed
        for _ in range(rounds):
            feed(encoded)
        return rounds

    return run


def decode_connect(encoded: bytes) -> Callable[[int], int]:
    def run(rounds: int) -> int:
        for _ in range(rounds):
            PacketReader().feed(encoded)  # a new connection each time
        return rounds

    return run


def encode_fields(qos: int, level: int) -> Callable[[int], int]:
    packet_id = 1 if qos else None

    def run(rounds: int) -> int:
        for _ in range(rounds):
            encode_publish(TOPIC, PAYLOAD, qos, False, False, packet_id, None, level)
        return rounds

    return run


def encode_packet(packet: Publish | Connect, level: int) -> Callable[[int], int]:
    def run(rounds: int) -> int:
        for _ in range(rounds):
            encode(packet, level)
        return rounds

    return run


def patch_packet_id(level: int) -> Callable[[int], int]:
    encoded = encode_publish(TOPIC, PAYLOAD, 1, False, False, 1, None, level)
    offset = publish_packet_id_offset(encoded)

    def run(rounds: int) -> int:
        for packet_id in range(1, rounds + 1):
            with_packet_id(encoded, offset, packet_id & 0xFFFF or 1)
        return rounds

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="length of one timed run")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per case")
    args = parser.parse_args()

    connect = Connect(
        "sensor-0042",
        protocol_level=5,
        keep_alive=60,
        username="fleet",
        password=b"secret",
        will=Will("sensors/0042/status", b"offline", 1, True),
        properties=Properties(session_expiry_interval=3600, receive_maximum=100),
    )
    cases: list[tuple[str, Callable[[int], int]]] = []
    for level in (4, 5):
        for qos in (0, 1):
            publish = Publish(TOPIC, PAYLOAD, qos, packet_id=1 if qos else None)
            encoded = encode(publish, level)
            name = f"PUBLISH v{level} QoS {qos} ({len(encoded)} B)"
            cases += [
                (f"decode {name} batch", decode_batch(encoded, level)),
                (f"decode {name} single", decode_single(encoded, level)),
                (f"encode {name} encode_publish", encode_fields(qos, level)),
                (f"encode {name} encode(Publish)", encode_packet(publish, level)),
            ]
        cases.append((f"patch packet id v{level} QoS 1 (with_packet_id)", patch_packet_id(level)))
    with_properties = Publish(
        TOPIC,
        PAYLOAD,
        1,
        packet_id=1,
        properties=Properties(message_expiry_interval=60, user_property=(("unit", "C"),)),
    )
    encoded = encode(with_properties, 5)
    name = f"PUBLISH v5 QoS 1 + 2 properties ({len(encoded)} B)"
    cases += [
        (f"decode {name} batch", decode_batch(encoded, 5)),
        (f"encode {name} encode(Publish)", encode_packet(with_properties, 5)),
    ]
    connect_bytes = encode(connect, 5)
    cases += [
        (f"decode CONNECT v5 ({len(connect_bytes)} B), new reader", decode_connect(connect_bytes)),
        (f"encode CONNECT v5 ({len(connect_bytes)} B)", encode_packet(connect, 5)),
    ]

    print(f"Python {sys.version.split()[0]}, best of {args.repeat} x {args.seconds} s")
    for name, run in cases:
        print(f"{name:62s} {rate(run, args.seconds, args.repeat):>12,.0f} packets/s")


if __name__ == "__main__":
    main()
