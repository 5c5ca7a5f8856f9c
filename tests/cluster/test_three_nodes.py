"""Three real mqttd nodes on one nats-server: fan-out to two remote nodes, a client id
that moves round all three, and a shared group spread over all three."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
from integration.paho_client import V5

from .conftest import NodeFactory, PahoFactory, routed

if TYPE_CHECKING:
    from conftest import MqttdProcess

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def three(cluster_node: NodeFactory) -> tuple[MqttdProcess, MqttdProcess, MqttdProcess]:
    return cluster_node("a"), cluster_node("b"), cluster_node("c")


def test_one_publish_reaches_subscribers_on_both_other_nodes_once(
    three: tuple[MqttdProcess, MqttdProcess, MqttdProcess], paho_factory: PahoFactory
) -> None:
    a, b, c = three
    on_b = paho_factory(b.port, "on-b")
    on_b.subscribe("fan/#", 1)
    on_c = paho_factory(c.port, "on-c")
    on_c.subscribe("fan/+", 1)
    publisher = paho_factory(a.port, "publisher")
    routed(publisher, "fan/probe", on_b, on_c)
    for i in range(10):
        publisher.publish("fan/x", f"{i}".encode(), qos=1)
    want = [f"{i}".encode() for i in range(10)]
    assert [m.payload for m in on_b.expect_messages(10)] == want
    assert [m.payload for m in on_c.expect_messages(10)] == want
    on_b.expect_no_message(0.5)
    on_c.expect_no_message(0.05)


def test_a_client_id_moving_round_three_nodes_is_served_by_one_at_a_time(
    three: tuple[MqttdProcess, MqttdProcess, MqttdProcess], paho_factory: PahoFactory
) -> None:
    connections = []
    for node in (*three, three[0]):
        connections.append(paho_factory(node.port, "nomad", protocol=V5))
        if len(connections) > 1:
            assert connections[-2].wait_disconnected(10) == 0x8E
    time.sleep(0.5)
    assert [c.disconnected.is_set() for c in connections] == [True, True, True, False]


def test_a_shared_group_over_three_nodes_gets_each_message_once(
    three: tuple[MqttdProcess, MqttdProcess, MqttdProcess], paho_factory: PahoFactory
) -> None:
    members = [paho_factory(node.port, f"member-{i}", protocol=V5) for i, node in enumerate(three)]
    for member in members:
        member.subscribe("$share/g/work/#", 1)
    publisher = paho_factory(three[1].port, "publisher", protocol=V5)
    routed(publisher, "work/probe", *members)
    for i in range(30):
        publisher.publish(f"work/{i}", f"{i}".encode(), qos=1)
    time.sleep(1.0)
    got: list[bytes] = []
    for member in members:
        while True:
            try:
                got.append(member.expect_message(0.05).payload)
            except AssertionError:
                break
    assert sorted(got) == sorted(f"{i}".encode() for i in range(30))
