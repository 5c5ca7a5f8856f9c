"""Flow control (Receive Maximum, 4.9), Maximum Packet Size both ways (3.1.2.11.4,
3.2.2.3.6), Maximum QoS and Retain Available (3.2.2.3.4, 3.2.2.3.5)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mqtt_raw import (
    PUBLISH,
    RECEIVE_MAXIMUM,
    RawClient,
    gen_puback,
    gen_publish,
    prop_u16,
)
from support.v5 import V5Client, wait_for

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import InProcessBroker


def test_never_more_unacknowledged_than_the_clients_receive_maximum(
    v5broker: InProcessBroker, uid: str
) -> None:
    with RawClient(v5broker.host, v5broker.port) as sub:
        sub.connect(f"{uid}-sub", proto_ver=5, properties=prop_u16(RECEIVE_MAXIMUM, 2))
        sub.subscribe(1, f"{uid}/t", 1, proto_ver=5)
        with V5Client(v5broker.host, v5broker.port, f"{uid}-pub") as pub:
            pub.connect()
            for i in range(5):
                pub.publish(f"{uid}/t", str(i).encode(), qos=1)
        first = [sub.expect_type(PUBLISH).publish(5) for _ in range(2)]
        sub.expect_silence(0.3)  # [MQTT-3.3.4-7]: the third waits for an acknowledgement
        sub.send(gen_puback(first[0].mid, proto_ver=5))
        third = sub.expect_type(PUBLISH).publish(5)
        sub.expect_silence(0.2)
        assert [p.payload for p in [*first, third]] == [b"0", b"1", b"2"]


def test_a_client_over_our_receive_maximum_gets_disconnect_0x93(
    broker_with: Callable[..., InProcessBroker], uid: str
) -> None:
    broker = broker_with(receive_maximum=1)
    with RawClient(broker.host, broker.port) as client:
        connack = client.connect(uid, proto_ver=5)
        assert connack.properties()[RECEIVE_MAXIMUM] == [1]
        # A QoS 2 flow stays open until PUBCOMP, and we never send PUBREL.
        client.send(gen_publish(f"{uid}/t", qos=2, mid=1, payload=b"x", proto_ver=5))
        assert client.expect_type(5).mid() == 1
        client.send(gen_publish(f"{uid}/t", qos=2, mid=2, payload=b"x", proto_ver=5))
        client.expect_disconnect(0x93)  # [MQTT-3.3.4-9]


def test_a_packet_above_our_maximum_gets_disconnect_0x95(
    broker_with: Callable[..., InProcessBroker], uid: str
) -> None:
    broker = broker_with(max_packet_size=100)
    with RawClient(broker.host, broker.port) as client:
        client.connect(uid, proto_ver=5)
        client.send(gen_publish(f"{uid}/t", payload=b"x" * 200, proto_ver=5))
        client.expect_disconnect(0x95)  # [MQTT-3.2.2-15] is the client's; we close as 4.13


def test_messages_above_the_clients_maximum_packet_size_are_not_sent(
    v5broker: InProcessBroker, uid: str
) -> None:
    before = v5broker.call(lambda: v5broker.broker.stats.messages_too_large)
    with (
        V5Client(
            v5broker.host,
            v5broker.port,
            f"{uid}-sub",
            connect_properties={"MaximumPacketSize": 120},
        ) as sub,
        V5Client(v5broker.host, v5broker.port, f"{uid}-pub") as pub,
    ):
        sub.connect()
        pub.connect()
        sub.subscribe(f"{uid}/t", 1)
        pub.publish(f"{uid}/t", b"s" * 20, qos=1)
        pub.publish(f"{uid}/t", b"L" * 500, qos=1)  # discarded as if sent [MQTT-3.1.2-25]
        pub.publish(f"{uid}/t", b"s" * 21, qos=1)
        assert [len(m.payload) for m in sub.expect_messages(2)] == [20, 21]
        sub.expect_no_message(0.2)
    wait_for(lambda: v5broker.call(lambda: v5broker.broker.stats.messages_too_large) == before + 1)


def test_maximum_qos_downgrades_subscriptions_and_refuses_higher_publishes(
    broker_with: Callable[..., InProcessBroker], uid: str
) -> None:
    broker = broker_with(maximum_qos=1)
    with V5Client(broker.host, broker.port, f"{uid}-sub") as sub:
        sub.connect()
        assert sub.subscribe(f"{uid}/t", 2) == [1]  # granted QoS 1
    with RawClient(broker.host, broker.port) as client:
        client.connect(uid, proto_ver=5)
        client.send(gen_publish(f"{uid}/t", qos=2, mid=1, payload=b"x", proto_ver=5))
        client.expect_disconnect(0x9B)  # [MQTT-3.2.2-11]


def test_retain_not_available_refuses_retained_publishes(
    broker_with: Callable[..., InProcessBroker], uid: str
) -> None:
    broker = broker_with(retain_available=False)
    with RawClient(broker.host, broker.port) as client:
        client.connect(uid, proto_ver=5)
        client.send(gen_publish(f"{uid}/t", retain=True, payload=b"x", proto_ver=5))
        client.expect_disconnect(0x9A)  # [MQTT-3.2.2-14]
