#!/usr/bin/env python3
"""CPU cost of the broker core per message, without sockets: a steady figure for A/B work.

    python scripts/profile_core.py                       # every scenario, us per message
    python scripts/profile_core.py fan-in-q1 --profile   # and where the time goes (cProfile)
    python scripts/profile_core.py --ab /tmp/mqttd-a     # A (that tree) vs B (this one)

The network benchmark (`scripts/bench.py`, `scripts/profile_ab.py`) measures the whole
broker, but on this shared 2-core machine its rates move by 20 % between runs, too much
to see a 5 % change. This script drives the sans-IO core the way the TCP layer does:
`Connection.data_received` with batches of encoded packets (a socket read), the broker's
output collected by the package's `MemorySink` (the tests' sink too; tree A of `--ab`
must hold mqttd/broker/memory_sink.py), and the clients' side (reading what the broker wrote,
building acknowledgements) done outside the timed part. Only the calls into the broker
are timed, in process CPU time, and each scenario reports the best of `--repeat` runs.
It leaves out what the TCP layer and the event loop cost (about a third of a real run:
see `scripts/profile_broker.py`), so it is a figure for changes to the codec and the
core, not a substitute for the benchmark.

Scenarios mirror bench.py's: 64-byte payloads, MQTT 3.1.1, max_inflight_messages 100.
`conns` connects and disconnects clients and reports us per connection and the core's
memory per idle connection (tracemalloc).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

# This tree's mqttd, not the one the venv has installed (editable: maybe another
# worktree's), unless PYTHONPATH names one (`--ab` runs each tree that way).
sys.path.insert(
    len(sys.path) if "PYTHONPATH" in os.environ else 0, str(Path(__file__).resolve().parents[1])
)

from mqttd.broker.broker import Broker
from mqttd.broker.clock import MonotonicClock
from mqttd.broker.connection import Connection
from mqttd.broker.memory_sink import MemorySink
from mqttd.broker.settings import BrokerSettings
from mqttd.protocol import (
    Connect,
    PacketReader,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Subscribe,
    Subscription,
    encode,
)
from mqttd.store.memory import MemoryStore

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = bytes(64)
LEVEL = 4


class Client:
    """One simulated client: its Connection, its sink and a reader for its input."""

    def __init__(self, broker: Broker, client_id: str) -> None:
        self.sink = MemorySink()
        self.conn: Connection = broker.connection(self.sink, f"127.0.0.1:{id(self) % 60000}")
        self.reader = PacketReader(protocol_level=LEVEL)
        self.conn.data_received(encode(Connect(client_id, LEVEL, True, 60), LEVEL))
        self.sink.take()

    def received(self) -> list[object]:
        data = self.sink.take()
        return list(self.reader.feed(data)) if data else []


class Timed:
    """Accumulates the CPU time of the calls into the broker."""

    def __init__(self) -> None:
        self.cpu = 0.0

    def feed(self, client: Client, data: bytes) -> None:
        t = time.process_time()
        client.conn.data_received(data)
        self.cpu += time.process_time() - t


def new_broker() -> Broker:
    settings = BrokerSettings(max_inflight_messages=100, max_queued_messages=1_000_000)
    return Broker(settings, MemoryStore(), MonotonicClock())


def publish_batch(qos: int, topic: str, first_id: int, n: int) -> bytes:
    return b"".join(
        encode(
            Publish(
                topic, PAYLOAD, qos, False, False, ((first_id + i) % 65535) + 1 if qos else None
            ),
            LEVEL,
        )
        for i in range(n)
    )


def acknowledge(client: Client, timed: Timed) -> int:
    """The client acknowledges every PUBLISH it got (QoS 2: PUBREC, then PUBCOMP for each
    PUBREL); returns how many PUBLISH packets it got."""
    got = 0
    packets = client.received()
    acks: list[bytes] = []
    for p in packets:
        if isinstance(p, Publish):
            got += 1
            if p.qos == 1:
                acks.append(encode(PubAck(p.packet_id or 0), LEVEL))
            elif p.qos == 2:
                acks.append(encode(PubRec(p.packet_id or 0), LEVEL))
    if acks:
        timed.feed(client, b"".join(acks))
    rels = [p for p in client.received() if isinstance(p, PubRel)]
    if rels:
        timed.feed(client, b"".join(encode(PubComp(p.packet_id), LEVEL) for p in rels))
    return got


def publisher_acks(pub: Client, timed: Timed) -> None:
    """A QoS 2 publisher answers PUBREC with PUBREL; others just read their acks."""
    recs = [p for p in pub.received() if isinstance(p, PubRec)]
    if recs:
        timed.feed(pub, b"".join(encode(PubRel(p.packet_id), LEVEL) for p in recs))
        pub.received()


def subscribe(client: Client, topic: str, qos: int) -> None:
    client.conn.data_received(encode(Subscribe(1, [Subscription(topic, qos)]), LEVEL))
    client.received()


def fan_in(qos: int, messages: int) -> float:
    """4 publishers -> 1 subscriber; each round every publisher sends a batch of 25."""
    broker = new_broker()
    sub = Client(broker, "sub")
    subscribe(sub, "bench/t", qos)
    pubs = [Client(broker, f"pub{i}") for i in range(4)]
    timed = Timed()
    batch = 25
    sent = got = 0
    while got < messages:
        if sent < messages:
            for pub in pubs:
                timed.feed(pub, publish_batch(qos, "bench/t", sent, batch))
                sent += batch
                publisher_acks(pub, timed)
        got += acknowledge(sub, timed)
    return timed.cpu / got


def fan_out(qos: int, messages: int) -> float:
    """1 publisher -> 50 subscribers; per deliveries."""
    broker = new_broker()
    subs = [Client(broker, f"sub{i}") for i in range(50)]
    for s in subs:
        subscribe(s, "bench/t", qos)
    pub = Client(broker, "pub")
    timed = Timed()
    sent = got = 0
    while got < messages * 50:
        if sent < messages:
            timed.feed(pub, publish_batch(qos, "bench/t", sent, 10))
            sent += 10
            publisher_acks(pub, timed)
        for s in subs:
            got += acknowledge(s, timed)
    return timed.cpu / got


def pairs(qos: int, messages: int) -> float:
    """100 publisher/subscriber pairs, each on its own topic."""
    broker = new_broker()
    subs = [Client(broker, f"sub{i}") for i in range(100)]
    for i, s in enumerate(subs):
        subscribe(s, f"bench/{i}", qos)
    pubs = [Client(broker, f"pub{i}") for i in range(100)]
    timed = Timed()
    sent = got = 0
    while got < messages:
        if sent < messages:
            for i, pub in enumerate(pubs):
                timed.feed(pub, publish_batch(qos, f"bench/{i}", sent, 5))
                sent += 5
        for s in subs:
            got += acknowledge(s, timed)
    return timed.cpu / got


def conns(count: int) -> float:
    """CONNECT + DISCONNECT per client: us per connection (memory is printed)."""
    broker = new_broker()
    timed = Timed()
    connects = [encode(Connect(f"c{i}", LEVEL, True, 60), LEVEL) for i in range(count)]
    clients: list[tuple[Connection, MemorySink]] = []
    t = time.process_time()
    for i in range(count):
        sink = MemorySink()
        conn = broker.connection(sink, f"127.0.0.1:{i}")
        conn.data_received(connects[i])
        clients.append((conn, sink))
    for conn, _ in clients:
        conn.data_received(b"\xe0\x00")
    timed.cpu = time.process_time() - t
    return timed.cpu / count


def conn_memory(count: int = 2000) -> float:
    """Bytes the core allocates per idle connected client (tracemalloc).

    The sinks are made before tracing starts: the network shell's sink is not the core.
    """
    broker = new_broker()
    keep: list[tuple[Connection, MemorySink]] = []
    connects = [encode(Connect(f"mqtt-load-{i:05d}", LEVEL, True, 60), LEVEL) for i in range(count)]
    sinks = [MemorySink() for _ in range(count)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(count):
        sink = sinks[i]
        conn = broker.connection(sink, f"127.0.0.1:{40000 + i}")
        conn.data_received(connects[i])
        keep.append((conn, sink))
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / count


SCENARIOS: dict[str, tuple[Callable[[], float], str]] = {
    "fan-in-q0": (lambda: fan_in(0, 40_000), "us/msg"),
    "fan-in-q1": (lambda: fan_in(1, 40_000), "us/msg"),
    "fan-in-q2": (lambda: fan_in(2, 20_000), "us/msg"),
    "fan-out-q1": (lambda: fan_out(1, 1_000), "us/delivery"),
    "pairs-q1": (lambda: pairs(1, 40_000), "us/msg"),
    "conns": (lambda: conns(5_000), "us/connection"),
}


def measure(names: list[str], repeat: int) -> dict[str, float]:
    """Best of `repeat` runs per scenario, in microseconds."""
    out: dict[str, float] = {}
    for name in names:
        fn = SCENARIOS[name][0]
        out[name] = 1e6 * min(fn() for _ in range(repeat))
    out["conn-bytes"] = conn_memory()
    return out


def run_tree(tree: Path | None, names: list[str], repeat: int) -> dict[str, float]:
    """measure() in a child process importing mqttd from `tree` (None: this tree)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree if tree is not None else ROOT)
    proc = subprocess.run(
        [sys.executable, __file__, "--json", "--repeat", str(repeat), *names],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    result: dict[str, float] = json.loads(proc.stdout)
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenarios", nargs="*", help=f"some of {', '.join(SCENARIOS)} (default all)")
    p.add_argument("--repeat", type=int, default=3, help="runs per scenario; the best counts")
    p.add_argument("--profile", action="store_true", help="cProfile the scenarios, top 30")
    p.add_argument("--ab", type=Path, default=None, help="tree A (holding mqttd/) vs this one")
    p.add_argument("--rounds", type=int, default=3, help="A/B rounds, interleaved")
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    names = args.scenarios or list(SCENARIOS)
    if args.profile:
        for name in names:
            prof = cProfile.Profile()
            prof.runcall(SCENARIOS[name][0])
            print(f"== {name}")
            pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        return 0
    if args.json:
        print(json.dumps(measure(names, args.repeat)))
        return 0
    if args.ab is None:
        for name, value in measure(names, args.repeat).items():
            unit = SCENARIOS[name][1] if name in SCENARIOS else "bytes/connection"
            print(f"{name:<12} {value:10.2f} {unit}")
        return 0
    runs: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    for _ in range(args.rounds):
        runs["A"].append(run_tree(args.ab, names, args.repeat))
        runs["B"].append(run_tree(None, names, args.repeat))
    print(f"{'':<12} {'A':>10} {'B':>10}   B/A   (median of {args.rounds} rounds)")
    for key in runs["A"][0]:
        a = statistics.median(r[key] for r in runs["A"])
        b = statistics.median(r[key] for r in runs["B"])
        print(f"{key:<12} {a:10.2f} {b:10.2f}  {b / a:5.3f}")
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
