"""Overload: fast publishers, one subscriber that stops reading for a while.

Back-pressure (mqttd/broker/flow.py, docs/backpressure.md) must pause the publishers
instead of dropping what they were told was received: every PUBACKed message arrives,
and the broker's memory stays bounded even with an unbounded queue setting.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from mqtt_raw import PUBACK, PUBLISH, RawClient, gen_puback, gen_publish

if TYPE_CHECKING:
    from conftest import MqttdProcess

pytestmark = pytest.mark.timeout(120)

TOPIC = "overload/t"


def rss_kb(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Publisher:
    """Sends `count` QoS 1 messages as fast as the socket takes them; a thread counts the
    PUBACKs. Payload: publisher number, sequence number, padding."""

    def __init__(self, server: MqttdProcess, number: int, count: int, size: int) -> None:
        self.number = number
        self.count = count
        self.size = size
        self.client = RawClient(server.host, server.port, timeout=60)
        self.client.connect(f"overload-pub-{number}")
        self.acked: set[int] = set()
        self.sender = threading.Thread(target=self._send, daemon=True)
        self.acker = threading.Thread(target=self._ack, daemon=True)

    def start(self) -> None:
        self.acker.start()
        self.sender.start()

    def _send(self) -> None:
        pad = bytes(self.size - 8)
        batch: list[bytes] = []
        for seq in range(1, self.count + 1):
            payload = struct.pack("!II", self.number, seq) + pad
            batch.append(gen_publish(TOPIC, qos=1, mid=seq, payload=payload))
            if len(batch) == 32:
                self.client.send(b"".join(batch))  # blocks while the broker is not reading
                batch.clear()
        if batch:
            self.client.send(b"".join(batch))

    def _ack(self) -> None:
        while len(self.acked) < self.count:
            packet = self.client.read_packet(timeout=60)
            if packet is None:
                return
            assert packet.type == PUBACK, packet.describe()
            self.acked.add(packet.mid())


def run_overload(
    server: MqttdProcess, publishers: int, count: int, size: int, stall: float
) -> tuple[dict[tuple[int, int], int], list[Publisher], int]:
    """Subscribe, stall `stall` seconds while the publishers send, then read everything.

    Returns (times each (publisher, seq) arrived, the publishers, the broker's largest
    RSS growth in kB while the subscriber was not reading).
    """
    sub = RawClient(server.host, server.port, timeout=60)
    sub.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sub.connect("overload-sub")
    sub.subscribe(1, TOPIC, 1)
    base = rss_kb(server.pid)
    pubs = [Publisher(server, n, count, size) for n in range(publishers)]
    for p in pubs:
        p.start()
    peak = base
    until = time.monotonic() + stall
    while time.monotonic() < until:
        peak = max(peak, rss_kb(server.pid))
        time.sleep(0.02)
    got: dict[tuple[int, int], int] = {}
    total = publishers * count
    deadline = time.monotonic() + 90
    while len(got) < total and time.monotonic() < deadline:
        try:
            packet = sub.read_packet(timeout=10)
        except TimeoutError:
            break  # what never came is reported below
        assert packet is not None, "the broker closed the subscriber"
        assert packet.type == PUBLISH, packet.describe()
        view = packet.publish()
        sub.send(gen_puback(view.mid))
        key = struct.unpack_from("!II", view.payload)
        got[key] = got.get(key, 0) + 1
    for p in pubs:
        p.sender.join(30)
        p.acker.join(30)
    for p in pubs:
        p.client.close()
    sub.close()
    return got, pubs, peak - base


def assert_nothing_acknowledged_was_lost(
    got: dict[tuple[int, int], int], pubs: list[Publisher]
) -> None:
    for p in pubs:
        assert len(p.acked) == p.count, f"publisher {p.number}: {len(p.acked)} PUBACKs"
        missing = [seq for seq in sorted(p.acked) if (p.number, seq) not in got]
        assert not missing, f"publisher {p.number}: {len(missing)} acknowledged, never delivered"


CONFIG = """
[limits]
max_inflight_messages = 20
max_queued_messages = {queued}

[persistence]
enabled = false

[log]
level = "info"  # the fixture waits for the ready line
"""

Factory = Callable[..., "MqttdProcess"]


def test_default_limits_lose_no_acknowledged_message_to_a_stalled_subscriber(
    mqttd_factory: Factory,
) -> None:
    # The default bound, 1000 queued messages: without back-pressure 3 x 2000 messages
    # sent during the stall overflow it, and drop_new drops what was acknowledged.
    server = mqttd_factory(config=CONFIG.format(queued=1000))
    got, pubs, _ = run_overload(server, publishers=3, count=2000, size=512, stall=1.5)
    assert_nothing_acknowledged_was_lost(got, pubs)
    assert "queue full" not in server.stderr


def test_memory_stays_bounded_with_an_unbounded_queue(mqttd_factory: Factory) -> None:
    # max_queued_messages = 0: the queue itself has no bound, so only pausing the
    # publishers keeps 3 x 2500 x 4 KiB = 30 MiB out of the broker while the subscriber
    # does not read. At the high-water mark (1000 messages, ~4 MiB) they wait.
    server = mqttd_factory(config=CONFIG.format(queued=0))
    got, pubs, growth_kb = run_overload(server, publishers=3, count=2500, size=4096, stall=2.0)
    assert_nothing_acknowledged_was_lost(got, pubs)
    assert growth_kb < 14 * 1024, f"broker RSS grew by {growth_kb} kB while stalled"
