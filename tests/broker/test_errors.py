"""Bad bytes and broken rules end a connection with the right reason code."""

from __future__ import annotations

from typing import Any

from support.core import Harness

from mqttd.protocol import Auth, Disconnect, ReasonCode, SubAck, Will
from mqttd.store.memory import MemoryStore


def test_5_malformed_packet_gets_disconnect_0x81(harness: Harness) -> None:
    client = harness.connected("c", level=5)
    client.send_bytes(b"\x62\x02\x00\x01")  # PUBREL is fine...
    client.packets()
    client.send_bytes(b"\x00\x00")  # ...packet type 0 is reserved
    assert client.expect(Disconnect).reason_code == ReasonCode.MALFORMED_PACKET
    assert client.closed
    assert harness.broker.stats.protocol_errors == 1


def test_3x_malformed_packet_closes_without_a_word(harness: Harness) -> None:
    client = harness.connected("c", level=4)
    client.send_bytes(b"\x00\x00")
    assert client.closed and client.packets() == []


def test_malformed_packet_publishes_the_will(harness: Harness) -> None:
    watcher = harness.connected("w")
    watcher.subscribe("will")
    client = harness.connected("c", will=Will("will", b"bad bytes"))
    client.send_bytes(b"\x00\x00")
    assert [p.payload for p in watcher.publishes()] == [b"bad bytes"]


def test_5_auth_packet_without_a_method_is_a_protocol_error(harness: Harness) -> None:
    client = harness.connected("c", level=5)
    client.send(Auth(0x19))
    assert client.expect(Disconnect).reason_code == ReasonCode.PROTOCOL_ERROR


def test_client_sending_a_server_packet_is_a_protocol_error(harness: Harness) -> None:
    client = harness.connected("c", level=5)
    client.send(SubAck(1, [0]))
    assert client.expect(Disconnect).reason_code == ReasonCode.PROTOCOL_ERROR


def test_bytes_after_close_are_ignored(harness: Harness) -> None:
    client = harness.connected("c", level=4)
    client.disconnect()
    client.publish("t")
    assert client.sink.writes_after_close == 0


def test_bytes_counters(harness: Harness) -> None:
    client = harness.connected("c", level=4)
    stats = harness.broker.stats
    assert stats.bytes_received > 0 and stats.bytes_sent == len(client.sink.buffer)


class CountingStore(MemoryStore):
    """Counts every recording call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if callable(attr) and not name.startswith("_") and name not in ("load", "open", "close"):
            object.__setattr__(self, "calls", object.__getattribute__(self, "calls") + 1)
        return attr


def test_qos0_never_touches_the_store() -> None:
    store = CountingStore()
    harness = Harness(store=store)
    sub = harness.connected("sub", clean_start=False)
    sub.subscribe("t", qos=1)
    pub = harness.connected("pub", clean_start=False)
    before = store.calls
    for _ in range(10):
        pub.publish("t", b"zero", qos=0)
    assert len(sub.publishes()) == 10
    assert store.calls == before
