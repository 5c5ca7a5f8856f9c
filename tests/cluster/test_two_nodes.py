"""Two real mqttd nodes on one real nats-server, with paho clients on both.

What one broker would show must show across nodes: a publish reaches every matching
subscription on every node exactly once, No Local holds for the publisher's own client
id, retained messages are cluster-wide, and a client id connected again on the other
node takes the session over with DISCONNECT 0x8E.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
from integration.paho_client import V5, V311, PahoClient
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions
from support.v5 import paho_props, props_of

from .conftest import NatsServer, NodeFactory, PahoFactory, routed

if TYPE_CHECKING:
    from conftest import MqttdProcess

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def nodes(cluster_node: NodeFactory) -> tuple[MqttdProcess, MqttdProcess]:
    return cluster_node("a"), cluster_node("b")


def test_wildcard_publish_reaches_each_subscription_on_every_node_exactly_once(
    nodes: tuple[MqttdProcess, MqttdProcess], paho_factory: PahoFactory
) -> None:
    a, b = nodes
    hash_on_b = paho_factory(b.port, "hash-on-b")
    hash_on_b.subscribe("w/#", 1)
    plus_on_b = paho_factory(b.port, "plus-on-b")
    plus_on_b.subscribe("w/+/x", 1)
    overlapping_on_b = paho_factory(b.port, "overlapping-on-b")
    overlapping_on_b.subscribe("w/#", 1)
    overlapping_on_b.subscribe("w/+/x", 1)
    local_on_a = paho_factory(a.port, "local-on-a")
    local_on_a.subscribe("w/+/x", 1)
    publisher = paho_factory(a.port, "publisher")
    receivers = (hash_on_b, plus_on_b, overlapping_on_b, local_on_a)
    routed(publisher, "w/probe/x", *receivers)

    for i in range(20):
        publisher.publish(f"w/{i}/x", f"m{i}".encode(), qos=1)
    want = [f"m{i}".encode() for i in range(20)]
    for receiver in receivers:
        # Exactly once each, in order (3.1.1: overlapping subscriptions give one copy).
        assert [m.payload for m in receiver.expect_messages(20)] == want
    time.sleep(0.5)
    for receiver in receivers:
        receiver.expect_no_message(0.05)


def test_a_node_without_matching_subscriptions_gets_nothing(
    nodes: tuple[MqttdProcess, MqttdProcess], paho_factory: PahoFactory
) -> None:
    a, b = nodes
    on_b = paho_factory(b.port, "on-b")
    on_b.subscribe("mine/#", 1)
    publisher = paho_factory(a.port, "publisher")
    routed(publisher, "mine/probe", on_b)
    on_b.unsubscribe("mine/#")
    on_b.subscribe("other/#", 1)
    routed(publisher, "other/probe", on_b)
    publisher.publish("mine/after", b"unwanted", qos=1)
    on_b.expect_no_message(0.5)


def test_no_local_holds_across_nodes(
    nodes: tuple[MqttdProcess, MqttdProcess], paho_factory: PahoFactory
) -> None:
    a, b = nodes
    x = paho_factory(a.port, "x", protocol=V5)
    y = paho_factory(b.port, "y", protocol=V5)
    no_local = SubscribeOptions(qos=1, noLocal=True)
    x.subscribe("nl/#", options=no_local)
    y.subscribe("nl/#", options=no_local)
    probe = paho_factory(a.port, "probe", protocol=V5)
    routed(probe, "nl/probe", x, y)
    probe2 = paho_factory(b.port, "probe2", protocol=V5)
    routed(probe2, "nl/probe", x, y)

    x.publish("nl/1", b"from x", qos=1)
    y.publish("nl/2", b"from y", qos=1)
    assert [m.payload for m in y.expect_messages(1)] == [b"from x"]
    assert [m.payload for m in x.expect_messages(1)] == [b"from y"]
    x.expect_no_message(0.5)
    y.expect_no_message(0.05)


def _retained_seen(
    port: int, paho_factory: PahoFactory, client_id: str, topic_filter: str
) -> list[bytes]:
    client = paho_factory(port, client_id)
    client.subscribe(topic_filter, 1)
    got: list[bytes] = []
    while True:
        try:
            message = client.expect_message(0.5)
        except AssertionError:
            break
        assert message.retain
        got.append(message.payload)
    client.disconnect()
    return got


def test_retained_set_on_one_node_is_matched_and_cleared_from_the_other(
    nodes: tuple[MqttdProcess, MqttdProcess], paho_factory: PahoFactory
) -> None:
    a, b = nodes
    paho_factory(a.port, "setter").publish("ret/a/1", b"kept", qos=1, retain=True)
    deadline = time.monotonic() + 10
    attempt = 0
    while True:
        attempt += 1
        seen = _retained_seen(b.port, paho_factory, f"reader-{attempt}", "ret/+/1")
        if seen == [b"kept"]:
            break
        assert not seen, seen
        assert time.monotonic() < deadline, "the retained message never reached node b"

    paho_factory(b.port, "clearer").publish("ret/a/1", b"", qos=1, retain=True)
    deadline = time.monotonic() + 10
    attempt += 1
    while _retained_seen(a.port, paho_factory, f"reader-{attempt}", "ret/#"):
        attempt += 1
        assert time.monotonic() < deadline, "the clear never reached node a"
    assert _retained_seen(b.port, paho_factory, "last-reader", "ret/#") == []


@pytest.mark.parametrize("protocol", [V5, V311], ids=["mqtt5", "mqtt311"])
def test_connecting_on_the_other_node_takes_the_client_id_over(
    nodes: tuple[MqttdProcess, MqttdProcess], paho_factory: PahoFactory, protocol: object
) -> None:
    a, b = nodes
    old = paho_factory(a.port, "device-1", protocol=protocol)
    old.subscribe("to/device", 1)
    new = paho_factory(b.port, "device-1", protocol=protocol)
    reason = old.wait_disconnected(10)
    if protocol == V5:
        assert reason == 0x8E  # Session taken over
    assert not new.disconnected.is_set()
    # The client id now lives on b: messages for it go there.
    new.subscribe("to/device", 1)
    sender = paho_factory(a.port, "sender", protocol=protocol)
    routed(sender, "to/device", new)
    assert_stays_connected(new)


def test_taking_the_client_id_back_on_the_first_node(
    nodes: tuple[MqttdProcess, MqttdProcess], paho_factory: PahoFactory
) -> None:
    a, b = nodes
    first = paho_factory(a.port, "roamer", protocol=V5)
    second = paho_factory(b.port, "roamer", protocol=V5)
    assert first.wait_disconnected(10) == 0x8E
    third = paho_factory(a.port, "roamer", protocol=V5)
    assert second.wait_disconnected(10) == 0x8E
    assert_stays_connected(third)


def assert_stays_connected(client: PahoClient) -> None:
    """No late takeover from the other node ends `client` (its ownership claim settles)."""
    time.sleep(0.5)
    assert not client.disconnected.is_set()


def test_mqtt5_properties_cross_nodes(
    nodes: tuple[MqttdProcess, MqttdProcess], paho_factory: PahoFactory
) -> None:
    a, b = nodes
    receiver = paho_factory(b.port, "receiver", protocol=V5)
    receiver.subscribe("props/#", 1)
    publisher = paho_factory(a.port, "publisher", protocol=V5)
    routed(publisher, "props/probe", receiver)
    props = paho_props(
        PacketTypes.PUBLISH,
        UserProperty=[("site", "7")],
        ContentType="text/plain",
        ResponseTopic="props/reply",
        CorrelationData=b"\x01\x02",
        MessageExpiryInterval=300,
    )
    publisher.publish("props/x", b"payload", qos=1, properties=props)
    got = receiver.expect_message()
    assert got.payload == b"payload"
    received = props_of(got)
    assert received.UserProperty == [("site", "7")]
    assert received.ContentType == "text/plain"
    assert received.ResponseTopic == "props/reply"
    assert received.CorrelationData == b"\x01\x02"
    assert 295 <= received.MessageExpiryInterval <= 300


def test_routing_and_takeover_work_again_after_nats_restarts(
    nodes: tuple[MqttdProcess, MqttdProcess],
    paho_factory: PahoFactory,
    nats_server: NatsServer,
) -> None:
    a, b = nodes
    receiver = paho_factory(b.port, "receiver")
    receiver.subscribe("after/#", 1)
    publisher = paho_factory(a.port, "publisher")
    routed(publisher, "after/probe", receiver)
    nats_server.restart()
    # The nodes reconnect and subscribe again by themselves; their clients stayed.
    routed(publisher, "after/probe", receiver, timeout=20)
    assert not receiver.disconnected.is_set() and not publisher.disconnected.is_set()
    # JetStream may still be recovering its streams: the claims are tried again until
    # it answers, and the takeover happens then.
    old = paho_factory(a.port, "device-2", protocol=V5)
    paho_factory(b.port, "device-2", protocol=V5)
    assert old.wait_disconnected(30) == 0x8E


def test_a_shared_subscription_gets_each_message_once_across_nodes(
    nodes: tuple[MqttdProcess, MqttdProcess], paho_factory: PahoFactory
) -> None:
    a, b = nodes
    member_a = paho_factory(a.port, "member-a", protocol=V5)
    member_a.subscribe("$share/workers/jobs/#", 1)
    member_b = paho_factory(b.port, "member-b", protocol=V5)
    member_b.subscribe("$share/workers/jobs/#", 1)
    everyone = paho_factory(b.port, "everyone", protocol=V5)
    everyone.subscribe("jobs/#", 1)
    publisher = paho_factory(a.port, "publisher", protocol=V5)
    routed(publisher, "jobs/probe", member_a, member_b, everyone)

    for i in range(40):
        publisher.publish(f"jobs/{i}", f"{i}".encode(), qos=1)
    assert len(everyone.expect_messages(40)) == 40
    time.sleep(0.5)
    got: list[bytes] = []
    for member in (member_a, member_b):
        while True:
            try:
                got.append(member.expect_message(0.05).payload)
            except AssertionError:
                break
    # Exactly once across the group, whichever node the member is on.
    assert sorted(got) == sorted(f"{i}".encode() for i in range(40))
