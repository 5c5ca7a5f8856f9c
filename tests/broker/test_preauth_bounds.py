"""What a socket may make the broker buffer and decode before its CONNECT is accepted."""

from __future__ import annotations

from typing import Any

from support.core import Harness

from mqttd.protocol import Connack, Connect, Disconnect, Properties, Publish, ReasonCode, encode
from mqttd.protocol.property_codec import MAX_USER_PROPERTIES


def test_max_connect_size_defaults_like_mosquitto(harness: Harness) -> None:
    assert harness.settings.max_connect_size == 100_000


def test_a_connect_claiming_256_mb_is_closed_at_its_fixed_header(harness: Harness) -> None:
    client = harness.client()
    # Fixed header: CONNECT, Remaining Length 268,435,455; then the start of a body.
    client.send_bytes(b"\x10\xff\xff\xff\x7f" + b"\x00\x04MQTT\x04\x02\x00\x3c")
    assert client.closed and client.sink.buffer == b""  # nothing read, nothing answered
    assert client.conn._reader.buffered == 0


def test_a_connect_above_max_connect_size_is_refused_but_one_below_is_not(
    make_harness: Any,
) -> None:
    harness = make_harness(max_connect_size=2000)
    big = harness.client(level=5)
    big.send(Connect("big", 5, True, 0, "u", b"p" * 2000, None, None))
    assert big.closed and big.sink.buffer == b""
    small = harness.client(level=5)
    assert small.connect("small", password=b"p" * 1900, username="u").reason_code == 0


def test_the_bound_ends_with_the_connack(make_harness: Any) -> None:
    harness = make_harness(max_connect_size=1000)
    sub = harness.connected("sub")
    sub.subscribe("t")
    pub = harness.client()
    # CONNECT and a 5 kB PUBLISH in one read: the PUBLISH is judged by max_packet_size,
    # since by then the CONNECT is accepted.
    pub.send_bytes(encode(Connect("pub", 4, True, 0), 4) + encode(Publish("t", b"x" * 5000, 0), 4))
    assert isinstance(pub.packets()[0], Connack) and not pub.closed
    (got,) = sub.publishes()
    assert len(got.payload) == 5000


def test_user_properties_per_packet_are_bounded(harness: Harness) -> None:
    pairs = tuple(("k", "") for _ in range(MAX_USER_PROPERTIES + 1))
    attacker = harness.client(level=5)
    attacker.send(Connect("a", 5, True, 0, properties=Properties(user_property=pairs)))
    assert attacker.closed
    pub = harness.connected("pub", level=5)
    pub.publish("t", properties=Properties(user_property=pairs))
    disconnect = pub.expect(Disconnect)
    assert disconnect.reason_code == ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR
    assert pub.closed
    ok = harness.connected("ok", level=5)
    ok.publish("t", properties=Properties(user_property=pairs[:MAX_USER_PROPERTIES]))
    assert not ok.closed
