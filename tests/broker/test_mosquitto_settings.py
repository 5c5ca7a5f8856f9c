"""The settings behind Mosquitto's options (docs/migrating-from-mosquitto.md), sans-IO.

message_size_limit, max_inflight_bytes, upgrade_outgoing_qos, persistent_client_expiration,
and the Mosquitto-visible defaults a converted mosquitto.conf sets (Receive Maximum 20,
packet ids counted up per client).
"""

from __future__ import annotations

from typing import Any

import pytest
from support.core import Harness

from mqttd.protocol import Connack, Properties, PubAck, PubComp, PubRec, PubRel, ReasonCode, Will

# -- message_size_limit ------------------------------------------------------------------


def _limited(make_harness: Any) -> tuple[Harness, Any]:
    harness = make_harness(message_size_limit=10)
    watcher = harness.connected("watcher", level=5)
    watcher.subscribe("big/#", qos=2)
    return harness, watcher


@pytest.mark.parametrize("qos", [1, 2])
def test_message_size_limit_refuses_a_5_0_publish_with_0x83_and_drops_it(
    make_harness: Any, qos: int
) -> None:
    harness, watcher = _limited(make_harness)
    client = harness.connected("pub", level=5)
    client.publish("big/x", b"x" * 11, qos=qos, packet_id=7)
    ack_type: type[PubAck | PubRec] = PubAck if qos == 1 else PubRec
    ack = client.expect(ack_type)
    # mosquitto.conf(5)'s "implementation specific error": 0x95 is no PUBACK/PUBREC code.
    assert (ack.packet_id, ack.reason_code) == (7, ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR)
    assert watcher.publishes() == []
    client.publish("big/x", b"x" * 10, qos=qos, packet_id=8)  # at the limit: accepted
    assert client.expect(ack_type).reason_code == 0
    assert [p.payload for p in watcher.publishes()] == [b"x" * 10]


def test_message_size_limit_acknowledges_a_3_1_1_publish_and_drops_it(make_harness: Any) -> None:
    harness, watcher = _limited(make_harness)
    client = harness.connected("pub", level=4)
    client.publish("big/x", b"x" * 11, qos=1, packet_id=3)
    assert client.expect(PubAck).packet_id == 3
    client.publish("big/x", b"x" * 11, qos=2, packet_id=4)
    assert client.expect(PubRec).packet_id == 4
    client.send(PubRel(4))
    assert client.expect(PubComp).packet_id == 4
    client.publish("big/x", b"x" * 11)  # QoS 0: nothing to say
    assert client.packets() == []
    assert watcher.publishes() == []
    assert not client.closed


@pytest.mark.parametrize(("level", "code"), [(5, ReasonCode.PACKET_TOO_LARGE), (4, 3)])
def test_message_size_limit_refuses_a_will_over_it(
    make_harness: Any, level: int, code: int
) -> None:
    harness = make_harness(message_size_limit=10)
    client = harness.client(level)
    connack = client.connect("c", will=Will("w", b"x" * 11))
    assert isinstance(connack, Connack) and connack.reason_code == code
    assert client.closed
    assert harness.connected("ok", level=level, will=Will("w", b"x" * 10))


# -- max_inflight_bytes ------------------------------------------------------------------


def test_max_inflight_bytes_holds_messages_until_the_bytes_in_flight_drop(
    make_harness: Any,
) -> None:
    harness = make_harness(max_inflight_bytes=100)
    sub = harness.connected("sub", level=4)
    sub.subscribe("t", qos=1)
    pub = harness.connected("pub", level=4)
    for i in range(3):
        pub.publish("t", bytes([i]) * 60, qos=1, packet_id=i + 1)
    first = sub.publishes()
    assert len(first) == 2  # 60 bytes < 100: one more may start; then 120 >= 100
    sub.ack(first[0])
    (third,) = sub.publishes()
    assert third.payload == bytes([2]) * 60


def test_max_inflight_bytes_always_lets_one_message_through(make_harness: Any) -> None:
    harness = make_harness(max_inflight_bytes=100)
    sub = harness.connected("sub", level=4)
    sub.subscribe("t", qos=1)
    pub = harness.connected("pub", level=4)
    pub.publish("t", b"a" * 150, qos=1, packet_id=1)
    pub.publish("t", b"b", qos=1, packet_id=2)
    (big,) = sub.publishes()
    assert big.payload == b"a" * 150
    sub.ack(big)
    assert [p.payload for p in sub.publishes()] == [b"b"]


def test_without_max_inflight_bytes_only_the_message_window_counts(harness: Harness) -> None:
    sub = harness.connected("sub", level=4)
    sub.subscribe("t", qos=1)
    pub = harness.connected("pub", level=4)
    for i in range(3):
        pub.publish("t", b"x" * 60, qos=1, packet_id=i + 1)
    assert len(sub.publishes()) == 3


# -- upgrade_outgoing_qos ----------------------------------------------------------------


@pytest.mark.parametrize(("upgrade", "expected"), [(False, 0), (True, 2)])
def test_upgrade_outgoing_qos_delivers_at_the_subscription_qos(
    make_harness: Any, upgrade: bool, expected: int
) -> None:
    harness = make_harness(upgrade_outgoing_qos=upgrade)
    sub = harness.connected("sub", level=4)
    sub.subscribe("t", qos=2)
    pub = harness.connected("pub", level=4)
    pub.publish("t", b"hello", qos=0, retain=True)
    (live,) = sub.publishes()
    assert live.qos == expected
    late = harness.connected("late", level=4)
    late.subscribe("t", qos=1)
    (retained,) = late.publishes()
    assert retained.qos == (1 if upgrade else 0)


# -- persistent_client_expiration --------------------------------------------------------


def test_persistent_client_expiration_ends_an_abandoned_3_1_1_session(make_harness: Any) -> None:
    harness = make_harness(persistent_client_expiration=3600)
    client = harness.connected("c", level=4, clean_start=False)
    client.subscribe("t", qos=1)
    client.lose()
    harness.advance(3500)
    back = harness.client(4)
    assert back.connect("c", clean_start=False).session_present
    back.lose()
    harness.advance(3601)
    again = harness.client(4)
    assert not again.connect("c", clean_start=False).session_present


def test_without_persistent_client_expiration_a_3_1_1_session_stays(harness: Harness) -> None:
    client = harness.connected("c", level=4, clean_start=False)
    client.lose()
    harness.advance(10 * 365 * 86_400)
    assert harness.client(4).connect("c", clean_start=False).session_present


def test_persistent_client_expiration_leaves_5_0_session_expiry_alone(make_harness: Any) -> None:
    harness = make_harness(persistent_client_expiration=60)
    never = Properties(session_expiry_interval=0xFFFFFFFF)
    client = harness.connected("c", level=5, clean_start=False, properties=never)
    client.lose()
    harness.advance(120)
    back = harness.client(5)
    assert back.connect("c", clean_start=False, properties=never).session_present


# -- what a converted mosquitto.conf makes a client see ----------------------------------


def test_receive_maximum_20_is_advertised_and_enforced(make_harness: Any) -> None:
    harness = make_harness(receive_maximum=20, max_inflight_messages=20)
    client = harness.client(5)
    connack = client.connect("c")
    assert connack.properties is not None and connack.properties.receive_maximum == 20
    for pid in range(1, 21):
        client.publish("t", qos=2, packet_id=pid)
    assert len(client.packets()) == 20 and not client.closed
    client.publish("t", qos=2, packet_id=21)
    assert client.closed  # DISCONNECT 0x93 Receive Maximum exceeded [MQTT-3.3.4-9]


def test_no_server_topic_aliases_when_turned_off(make_harness: Any) -> None:
    harness = make_harness(server_topic_aliases=False)
    sub = harness.client(5)
    sub.connect("sub", properties=Properties(topic_alias_maximum=10))
    sub.subscribe("t", qos=0)
    pub = harness.connected("pub", level=5)
    for _ in range(3):
        pub.publish("t", b"x")
    received = sub.publishes()
    assert [p.topic for p in received] == ["t"] * 3
    assert all(p.properties is None or p.properties.topic_alias is None for p in received)


def test_packet_ids_count_up_per_client(harness: Harness) -> None:
    subs = [harness.connected(f"sub{i}", level=4) for i in range(2)]
    for sub in subs:
        sub.subscribe("t", qos=1)
    pub = harness.connected("pub", level=4)
    for i in range(4):
        pub.publish("t", qos=1, packet_id=100 + i)
    for sub in subs:
        received = sub.publishes()
        assert [p.packet_id for p in received] == [1, 2, 3, 4]
        for p in received:
            sub.ack(p)
    pub.publish("t", qos=1, packet_id=200)
    assert [p.packet_id for p in subs[0].publishes()] == [5]


# -- pubrec_first: the order of a QoS 2 publisher's PUBREC and the forwarded PUBLISH -----


def _record_writes(order: list[str], name: str, client: Any) -> None:
    write = client.sink.write

    def recording(data: bytes) -> None:
        order.append(f"{name}:{data[0] >> 4}")
        write(data)

    client.sink.write = recording


@pytest.mark.parametrize("pubrec_first", [False, True])
def test_pubrec_first_acknowledges_before_the_message_goes_on(
    make_harness: Any, pubrec_first: bool
) -> None:
    harness = make_harness(pubrec_first=pubrec_first)
    other = harness.connected("other", level=4)
    other.subscribe("q", qos=2)
    pub = harness.connected("pub", level=4)
    pub.subscribe("q", qos=2)  # its own message comes back on the same socket
    order: list[str] = []
    _record_writes(order, "other", other)
    _record_writes(order, "pub", pub)
    pub.publish("q", b"m", qos=2, packet_id=9)
    # 3 = PUBLISH, 5 = PUBREC; Mosquitto's order is PUBREC first.
    if pubrec_first:
        assert order == ["pub:5", "other:3", "pub:3"]
    else:
        assert order == ["other:3", "pub:3", "pub:5"]
    pub.send(PubRel(9))
    first, second = ("PubRec", "Publish") if pubrec_first else ("Publish", "PubRec")
    assert [type(p).__name__ for p in pub.packets()] == [first, second, "PubComp"]
    assert [p.payload for p in other.publishes()] == [b"m"]


def test_pubrec_first_resends_are_acknowledged_not_routed_again(make_harness: Any) -> None:
    harness = make_harness(pubrec_first=True)
    sub = harness.connected("sub", level=5)
    sub.subscribe("q", qos=2)
    pub = harness.connected("pub", level=5)
    pub.publish("q", b"m", qos=2, packet_id=4)
    assert pub.expect(PubRec).reason_code == 0  # 0x00 even before anyone is matched
    pub.publish("q", b"m", qos=2, packet_id=4, dup=True)
    assert pub.expect(PubRec).packet_id == 4
    assert len(sub.publishes()) == 1
