"""Configured limits and features, seen from real sockets: what CONNACK advertises is
what the broker enforces. Each test starts an in-process broker with one setting changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from mqtt_raw import (
    ASSIGNED_CLIENT_IDENTIFIER,
    CONNACK,
    DISCONNECT,
    MAXIMUM_PACKET_SIZE,
    MAXIMUM_QOS,
    PUBLISH,
    PUBREC,
    RECEIVE_MAXIMUM,
    RETAIN_AVAILABLE,
    SERVER_KEEP_ALIVE,
    SUBACK,
    WILDCARD_SUBSCRIPTION_AVAILABLE,
    RawClient,
    assert_broker_works,
    decode_properties,
    gen_connack,
    gen_connect,
    gen_puback,
    gen_publish,
    gen_suback,
    gen_subscribe,
)

if TYPE_CHECKING:
    from conftest import InProcessBroker, InProcessFactory

pytestmark = pytest.mark.timeout(30)


def _with(section: str, **values: Any) -> Callable[[Any], None]:
    def configure(config: Any) -> None:
        for key, value in values.items():
            setattr(getattr(config, section), key, value)

    return configure


def _client(instance: InProcessBroker) -> RawClient:
    return RawClient(instance.host, instance.port)


def test_max_packet_size_is_advertised_and_enforced(broker_factory: InProcessFactory) -> None:
    instance = broker_factory(_with("limits", max_packet_size=1024))
    with _client(instance) as v5, _client(instance) as v311:
        connack = v5.connect("big5", proto_ver=5)
        assert connack.properties()[MAXIMUM_PACKET_SIZE] == [1024]
        v5.send(gen_publish("t", payload=b"x" * 2000, proto_ver=5))
        v5.expect_disconnect(0x95, 3)  # Packet too large [MQTT-3.2.2-15]
        v311.connect("big311")
        v311.send(gen_publish("t", payload=b"x" * 2000))
        v311.expect_closed(3)
    assert_broker_works(instance.host, instance.port)


def test_receive_maximum_is_advertised_and_exceeding_it_is_0x93(
    broker_factory: InProcessFactory,
) -> None:
    instance = broker_factory(_with("limits", receive_maximum=2))
    with _client(instance) as client:
        connack = client.connect("rm", proto_ver=5)
        assert connack.properties()[RECEIVE_MAXIMUM] == [2]
        for mid in (1, 2, 3):  # QoS 2 without PUBREL: each stays unacknowledged
            client.send(gen_publish("t", qos=2, mid=mid, proto_ver=5))
        client.expect_type(PUBREC)
        client.expect_type(PUBREC)
        client.expect_disconnect(0x93, 3)  # Receive Maximum exceeded [MQTT-3.3.4-8]


def test_maximum_qos_1_is_advertised_downgrades_v311_grants_and_refuses_v5_qos2(
    broker_factory: InProcessFactory,
) -> None:
    instance = broker_factory(_with("mqtt", maximum_qos=1))
    with _client(instance) as v311, _client(instance) as v5:
        v311.connect("mq311")
        v311.send(gen_subscribe(1, "t", 2))
        v311.expect_packet(gen_suback(1, 1), "SUBACK granting QoS 1")  # [MQTT-3.9.3]
        connack = v5.connect("mq5", proto_ver=5)
        assert connack.properties()[MAXIMUM_QOS] == [1]
        v5.send(gen_publish("t", qos=2, mid=1, proto_ver=5))
        v5.expect_disconnect(0x9B, 3)  # QoS not supported [MQTT-3.2.2-11]


def test_retain_unavailable_is_advertised_and_retained_publish_is_0x9a(
    broker_factory: InProcessFactory,
) -> None:
    instance = broker_factory(_with("mqtt", retain_available=False))
    with _client(instance) as client:
        connack = client.connect("ra", proto_ver=5)
        assert connack.properties()[RETAIN_AVAILABLE] == [0]
        client.send(gen_publish("t", retain=True, payload=b"r", proto_ver=5))
        client.expect_disconnect(0x9A, 3)  # Retain not supported [MQTT-3.2.2-14]


def test_wildcards_unavailable_refuses_wildcard_filters_with_0xa2(
    broker_factory: InProcessFactory,
) -> None:
    instance = broker_factory(_with("mqtt", wildcard_subscription_available=False))
    with _client(instance) as client:
        connack = client.connect("wa", proto_ver=5)
        assert connack.properties()[WILDCARD_SUBSCRIPTION_AVAILABLE] == [0]
        client.send(gen_subscribe(1, [("a/#", 0), ("a/b", 0)], proto_ver=5))
        packet = client.read_packet()
        assert packet is not None, "closed"
        if packet.type == SUBACK:
            end = decode_properties(packet.body, 2)[1]
            assert list(packet.body[end:]) == [0xA2, 0x00]
        else:  # the spec allows a DISCONNECT 0xA2 as well
            assert packet.reason_code() == 0xA2, packet.describe()


def test_zero_length_client_id_can_be_refused(broker_factory: InProcessFactory) -> None:
    instance = broker_factory(_with("mqtt", allow_zero_length_client_id=False))
    with _client(instance) as v311, _client(instance) as v5:
        v311.send(gen_connect(""))
        v311.expect_packet(gen_connack(rc=0x02), "CONNACK 0x02")
        v311.expect_closed(3)
        v5.send(gen_connect("", proto_ver=5))
        packets = v5.expect_closed(3, allow=[CONNACK])
        assert packets and packets[0].reason_code() == 0x85  # Client Identifier not valid


def test_assigned_client_identifiers_use_the_configured_prefix(
    broker_factory: InProcessFactory,
) -> None:
    instance = broker_factory(_with("mqtt", client_id_prefix="fleet-"))
    with _client(instance) as client:
        connack = client.connect("", proto_ver=5)
        assigned = connack.properties()[ASSIGNED_CLIENT_IDENTIFIER][0]
        assert isinstance(assigned, str) and assigned.startswith("fleet-")


def test_server_keep_alive_caps_the_clients_keep_alive(broker_factory: InProcessFactory) -> None:
    instance = broker_factory(_with("limits", max_keepalive=1))
    with _client(instance) as client:
        connack = client.connect("ka", proto_ver=5, keepalive=600)
        assert connack.properties()[SERVER_KEEP_ALIVE] == [1]  # [MQTT-3.2.2-21]
        client.expect_closed(4, allow=[DISCONNECT])  # and it is the one enforced


def test_inflight_window_holds_back_deliveries_until_acknowledged(
    broker_factory: InProcessFactory,
) -> None:
    instance = broker_factory(_with("limits", max_inflight_messages=3))
    with _client(instance) as subscriber, _client(instance) as publisher:
        subscriber.connect("window")
        subscriber.subscribe(1, "w", 1)
        publisher.connect("window-pub")
        for i in range(6):
            publisher.send(gen_publish("w", qos=1, mid=i + 1, payload=str(i).encode()))
        first = [subscriber.expect_type(PUBLISH).publish() for _ in range(3)]
        subscriber.expect_silence(0.3)  # three inflight, the rest queued
        for message in first:
            subscriber.send(gen_puback(message.mid))
        rest = subscriber.receive_publishes(3)
        assert [m.payload for m in first + rest] == [str(i).encode() for i in range(6)]


@pytest.mark.parametrize(
    ("policy", "kept"), [("drop_new", range(0, 3)), ("drop_oldest", range(3, 6))]
)
def test_offline_queue_overflow_follows_the_configured_policy(
    broker_factory: InProcessFactory, policy: str, kept: range
) -> None:
    instance = broker_factory(_with("limits", max_queued_messages=3, queue_overflow=policy))
    with _client(instance) as subscriber:
        subscriber.connect("queued", clean_session=False)
        subscriber.subscribe(1, "q", 1)
        subscriber.disconnect()
    with _client(instance) as publisher:
        publisher.connect("queued-pub")
        for i in range(6):
            publisher.send(gen_publish("q", qos=1, mid=i + 1, payload=str(i).encode()))
        for _ in range(6):
            publisher.expect_type(4)
    with _client(instance) as back:
        back.connect("queued", clean_session=False, session_present=True)
        got = back.receive_publishes(3)
        back.expect_silence(0.3)
    assert [m.payload for m in got] == [str(i).encode() for i in kept]
    dropped = instance.call(lambda: instance.broker.stats.messages_dropped)
    assert dropped == 3
