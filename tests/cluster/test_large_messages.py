"""Messages near NATS's max_payload: a cluster bounds its packets by what NATS carries.

nats-server runs with `max_payload: 65536` (its default is 1 MiB). Each node then
accepts MQTT packets up to `limits.packet_limit(65536, node)` bytes, says so in a 5.0
CONNACK (Maximum Packet Size) and refuses a larger PUBLISH as one broker refuses a
packet above its `max_packet_size`: DISCONNECT 0x95 for 5.0, the socket closed for
3.1.1, and never a PUBACK/PUBREC. A message within the limit crosses to the other node
whole: QoS 0, QoS 1, retained, queued for a persistent session that then moves to the
other node (its session record carries the message), and a will.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from integration.paho_client import V5, V311
from mqtt_raw import (
    CONNACK,
    MAXIMUM_PACKET_SIZE,
    PUBACK,
    PUBLISH,
    PUBREC,
    SUBACK,
    TOPIC_ALIAS,
    RawClient,
    gen_connect,
    gen_publish,
    gen_subscribe,
    prop_u16,
)

from mqttd.cluster.limits import CLIENT_ID_ROOM, packet_limit

from .conftest import NatsServer, PahoFactory, node_toml, routed

if TYPE_CHECKING:
    from conftest import MqttdFactory, MqttdProcess

pytestmark = pytest.mark.timeout(120)

MAX_PAYLOAD = 65536


@pytest.fixture
def small_nats(nats_factory: Callable[..., NatsServer]) -> NatsServer:
    return nats_factory(settings=f"max_payload: {MAX_PAYLOAD}\n")


@pytest.fixture
def nodes(small_nats: NatsServer, mqttd_factory: MqttdFactory) -> tuple[MqttdProcess, MqttdProcess]:
    extra = "[limits]\nmax_packet_size = 1000000\n"
    a = mqttd_factory(config=node_toml(small_nats.url, "a") + extra)
    b = mqttd_factory(config=node_toml(small_nats.url, "b") + extra)
    return a, b


def publish_of_size(size: int, topic: str, qos: int, proto_ver: int, retain: bool = False) -> bytes:
    """A PUBLISH packet of exactly `size` bytes on `topic` (its payload fills it)."""
    n = size
    while True:
        packet = gen_publish(
            topic,
            qos=qos,
            mid=1 if qos else 0,
            payload=b"x" * n,
            proto_ver=proto_ver,
            retain=retain,
        )
        if len(packet) == size:
            return packet
        n -= len(packet) - size


def connect(port: int, client_id: str, proto_ver: int) -> tuple[RawClient, int | None]:
    """A raw client and the Maximum Packet Size of its CONNACK (5.0; None for 3.1.1)."""
    client = RawClient("127.0.0.1", port)
    client.send(gen_connect(client_id, proto_ver=proto_ver))
    connack = client.expect_type(CONNACK)
    assert connack.reason_code() == 0
    if proto_ver != 5:
        return client, None
    values = connack.properties().get(MAXIMUM_PACKET_SIZE)
    return client, int(values[0]) if values else None  # type: ignore[arg-type]


def test_a_5_0_client_learns_the_cluster_limit_in_connack_and_the_node_logs_why(
    nodes: tuple[MqttdProcess, MqttdProcess],
) -> None:
    a, b = nodes
    for node, name in ((a, "a"), (b, "b")):
        client, limit = connect(node.port, "learns", 5)
        client.close()
        # limits.max_packet_size (1,000,000) is above what NATS carries: NATS bounds it.
        assert limit == packet_limit(MAX_PAYLOAD, name)
        assert MAX_PAYLOAD - 2048 < limit < MAX_PAYLOAD
        assert f"largest MQTT packet {limit} bytes (limits.max_packet_size is 1000000)" in (
            node.stderr
        )
        assert "max_payload of 65536 bytes" in node.stderr


@pytest.mark.parametrize(("proto_ver", "qos"), [(5, 1), (5, 2), (5, 0), (4, 1), (4, 2)])
def test_a_publish_above_the_limit_is_refused_as_too_large_and_never_acknowledged(
    nodes: tuple[MqttdProcess, MqttdProcess],
    paho_factory: PahoFactory,
    proto_ver: int,
    qos: int,
) -> None:
    a, b = nodes
    on_b = paho_factory(b.port, "on-b")
    on_b.subscribe("big/#", 1)
    probe = paho_factory(a.port, "probe")
    routed(probe, "big/probe", on_b)
    publisher, _ = connect(a.port, "big-publisher", proto_ver)
    publisher.send(publish_of_size(packet_limit(MAX_PAYLOAD, "a") + 1, "big/x", qos, proto_ver))
    if proto_ver == 5:
        publisher.expect_disconnect(0x95)  # fails on a PUBACK/PUBREC before it
    else:
        assert publisher.expect_closed() == []  # 3.1.1: closed, nothing acknowledged
    on_b.expect_no_message(0.5)
    # The node's log says which limit it was.
    assert "in a cluster: limits.max_packet_size or what NATS's max_payload carries" in a.stderr
    # The node goes on: a message within the limit still crosses.
    probe.publish("big/after", b"small", qos=1)
    assert on_b.expect_message().payload == b"small"


@pytest.mark.parametrize(("proto_ver", "qos"), [(5, 0), (5, 1), (4, 0), (4, 1), (4, 2)])
def test_a_message_at_the_limit_crosses_to_the_other_node_whole(
    nodes: tuple[MqttdProcess, MqttdProcess],
    paho_factory: PahoFactory,
    proto_ver: int,
    qos: int,
) -> None:
    a, b = nodes
    on_b = paho_factory(b.port, "on-b", protocol=V5 if proto_ver == 5 else V311)
    on_b.subscribe("at/#", 2)
    probe = paho_factory(a.port, "probe")
    routed(probe, "at/probe", on_b)
    publisher, _ = connect(a.port, "at-publisher", proto_ver)
    packet = publish_of_size(packet_limit(MAX_PAYLOAD, "a"), "at/x", qos, proto_ver)
    publisher.send(packet)
    if qos == 1:
        assert publisher.expect_type(PUBACK).mid() == 1
    elif qos == 2:
        assert publisher.expect_type(PUBREC).mid() == 1
    got = on_b.expect_message()
    assert got.topic == "at/x"
    assert got.payload == packet[-len(got.payload) :] and len(got.payload) > MAX_PAYLOAD - 2048
    publisher.close()


def test_a_retained_message_at_the_limit_is_retained_cluster_wide(
    nodes: tuple[MqttdProcess, MqttdProcess], paho_factory: PahoFactory
) -> None:
    a, b = nodes
    publisher, _ = connect(a.port, "retainer", 5)
    packet = publish_of_size(packet_limit(MAX_PAYLOAD, "a"), "kept/x", 1, 5, retain=True)
    publisher.send(packet)
    assert publisher.expect_type(PUBACK).reason_code() in (0, 0x10)
    deadline = time.monotonic() + 10
    while True:  # the retained bucket reaches node b within a round trip or so
        on_b = paho_factory(b.port, f"late-{time.monotonic()}")
        on_b.subscribe("kept/#", 1)
        try:
            got = on_b.expect_message(timeout=0.5)
            break
        except AssertionError:
            on_b.close()
            assert time.monotonic() < deadline, "the retained message never reached node b"
    assert got.retain and got.topic == "kept/x"
    assert len(got.payload) > MAX_PAYLOAD - 2048 and packet.endswith(got.payload)
    publisher.close()


def test_a_client_id_longer_than_the_room_kept_for_it_is_refused_not_dropped(
    nodes: tuple[MqttdProcess, MqttdProcess], paho_factory: PahoFactory
) -> None:
    """The limit keeps room for a client id of CLIENT_ID_ROOM bytes (each copy carries
    the publisher's id): a longer one with a packet at the limit does not fit NATS, and
    the node refuses the message as too large rather than acknowledge it."""
    a, b = nodes
    on_b = paho_factory(b.port, "on-b")
    on_b.subscribe("long/#", 1)
    probe = paho_factory(a.port, "probe")
    routed(probe, "long/probe", on_b)
    publisher, _ = connect(a.port, "c" * (3 * CLIENT_ID_ROOM), 5)
    publisher.send(publish_of_size(packet_limit(MAX_PAYLOAD, "a"), "long/x", 1, 5))
    publisher.expect_disconnect(0x95)
    on_b.expect_no_message(0.5)
    assert "do not fit NATS's max_payload of 65536 bytes" in a.stderr


def test_a_persistent_session_holding_a_message_at_the_limit_moves_to_the_other_node(
    nodes: tuple[MqttdProcess, MqttdProcess], paho_factory: PahoFactory
) -> None:
    """The session's log carries the message inline (a record): it must fit too."""
    a, b = nodes
    subscriber = RawClient("127.0.0.1", b.port)
    subscriber.send(gen_connect("keeper", clean_session=False))
    subscriber.expect_type(CONNACK)
    subscriber.send(gen_subscribe(1, "held/#", 1))
    subscriber.expect_type(SUBACK)
    subscriber.close()
    time.sleep(0.3)
    publisher, _ = connect(a.port, "held-publisher", 4)
    packet = publish_of_size(packet_limit(MAX_PAYLOAD, "a"), "held/x", 1, 4)
    publisher.send(packet)
    assert publisher.expect_type(PUBACK).mid() == 1
    publisher.close()
    # Back on node a: the session comes from its log in JetStream, with the message.
    again = RawClient("127.0.0.1", a.port)
    again.send(gen_connect("keeper", clean_session=False))
    assert again.expect_type(CONNACK).raw[2] == 1  # session present
    got = again.expect_type(PUBLISH, timeout=10).publish(4)
    assert got.topic == "held/x" and packet.endswith(got.payload)
    assert len(got.payload) > MAX_PAYLOAD - 2048
    again.close()
    assert "too large" not in a.stderr + b.stderr


def test_a_will_at_the_limit_is_kept_for_the_survivors_and_crosses(
    nodes: tuple[MqttdProcess, MqttdProcess], paho_factory: PahoFactory
) -> None:
    a, b = nodes
    on_b = paho_factory(b.port, "on-b")
    on_b.subscribe("will/#", 1)
    probe = paho_factory(a.port, "probe")
    routed(probe, "will/probe", on_b)
    limit = packet_limit(MAX_PAYLOAD, "a")
    size = limit
    while True:
        connect_packet = gen_connect(
            "willing", will_topic="will/x", will_payload=b"w" * size, will_qos=1, proto_ver=5
        )
        if len(connect_packet) <= limit:
            break
        size -= len(connect_packet) - limit
    client = RawClient("127.0.0.1", a.port)
    client.send(connect_packet)
    assert client.expect_type(CONNACK).reason_code() == 0
    time.sleep(0.5)  # the will entry goes to the wills bucket after the claim
    client.abort()  # no DISCONNECT: the will is due
    got = on_b.expect_message()
    assert got.topic == "will/x" and got.payload == b"w" * size
    assert "too large" not in a.stderr


def test_a_topic_alias_standing_for_a_long_topic_cannot_slip_a_message_past_nats(
    nodes: tuple[MqttdProcess, MqttdProcess], paho_factory: PahoFactory
) -> None:
    """A PUBLISH within the limit that names its topic by an alias: the message carries
    the whole topic across the cluster. When that no longer fits NATS, the node refuses
    it as too large (0x95) rather than acknowledge it."""
    a, b = nodes
    long_topic = "alias/" + "t" * 4000
    on_b = paho_factory(b.port, "on-b")
    on_b.subscribe("alias/#", 1)
    probe = paho_factory(a.port, "probe")
    routed(probe, "alias/probe", on_b)
    publisher = RawClient("127.0.0.1", a.port)
    publisher.send(gen_connect("aliased", proto_ver=5))
    assert publisher.expect_type(CONNACK).reason_code() == 0
    alias = prop_u16(TOPIC_ALIAS, 1)
    publisher.send(
        gen_publish(long_topic, qos=1, mid=1, payload=b"s", proto_ver=5, properties=alias)
    )
    assert publisher.expect_type(PUBACK).mid() == 1
    assert on_b.expect_message().topic == long_topic  # the alias works across nodes
    limit = packet_limit(MAX_PAYLOAD, "a")
    n = limit
    while True:
        packet = gen_publish("", qos=1, mid=2, payload=b"x" * n, proto_ver=5, properties=alias)
        if len(packet) <= limit:
            break
        n -= len(packet) - limit
    publisher.send(packet)  # within the limit as sent, 4 KB more as it crosses
    publisher.expect_disconnect(0x95)
    on_b.expect_no_message(0.5)
