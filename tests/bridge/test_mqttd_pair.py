"""Two mqttd processes bridged together, watched by paho clients.

The same checks as test_inprocess.py, but with real processes and an independent client
library: remapping in both directions, and no loop when the bridge carries "#" both ways.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from integration.paho_client import V5, V311

from .conftest import PahoFactory
from .test_mosquitto import bridge_toml, wait_bridge_up

if TYPE_CHECKING:
    from conftest import MqttdFactory

pytestmark = pytest.mark.timeout(120)

LEVELS = [pytest.param(4, V311, id="mqtt311"), pytest.param(5, V5, id="mqtt5")]


@pytest.mark.parametrize(("level", "paho_level"), LEVELS)
def test_mqttd_to_mqttd_both_ways_on_everything_without_echo(
    level: int, paho_level: object, mqttd_factory: MqttdFactory, paho_factory: PahoFactory
) -> None:
    b = mqttd_factory()
    topics = '[[bridge.topics]]\npattern = "#"\ndirection = "both"\nqos = 1\n'
    a = mqttd_factory(config=bridge_toml("ab", b.port, topics, protocol_version=level))
    wait_bridge_up(a, "ab")
    on_a = paho_factory(a.port, "on-a", protocol=paho_level)
    on_b = paho_factory(b.port, "on-b", protocol=paho_level)
    on_a.subscribe("#", 1)
    on_b.subscribe("#", 1)
    on_a.publish("loop/a", b"from a", qos=1)
    on_b.publish("loop/b", b"from b", qos=1)
    assert {m.payload for m in on_a.expect_messages(2)} == {b"from a", b"from b"}
    assert {m.payload for m in on_b.expect_messages(2)} == {b"from a", b"from b"}
    # A few seconds of silence: nothing echoes, nothing circulates.
    on_a.expect_no_message(3.0)
    on_b.expect_no_message(0.1)


@pytest.mark.parametrize(("level", "paho_level"), LEVELS)
def test_mqttd_to_mqttd_remaps_both_directions(
    level: int, paho_level: object, mqttd_factory: MqttdFactory, paho_factory: PahoFactory
) -> None:
    cloud = mqttd_factory()
    topics = """
[[bridge.topics]]
pattern = "#"
direction = "out"
qos = 1
local_prefix = "edge/"
remote_prefix = "sites/7/"
[[bridge.topics]]
pattern = "#"
direction = "in"
qos = 2
local_prefix = "cloud/"
remote_prefix = "commands/7/"
"""
    edge = mqttd_factory(config=bridge_toml("up", cloud.port, topics, protocol_version=level))
    wait_bridge_up(edge, "up")
    at_cloud = paho_factory(cloud.port, "at-cloud", protocol=paho_level)
    at_edge = paho_factory(edge.port, "at-edge", protocol=paho_level)
    at_cloud.subscribe("sites/#", 1)
    at_edge.subscribe("cloud/#", 2)
    at_edge.publish("edge/temp/1", b"20", qos=1)
    at_edge.publish("unbridged/temp/1", b"stays here", qos=1)
    message = at_cloud.expect_message()
    assert (message.topic, message.payload) == ("sites/7/temp/1", b"20")
    at_cloud.publish("commands/7/valve", b"close", qos=2)
    at_cloud.publish("commands/8/valve", b"not ours", qos=2)
    message = at_edge.expect_message()
    assert (message.topic, message.payload, message.qos) == ("cloud/valve", b"close", 2)
    at_cloud.expect_no_message(0.5)
    at_edge.expect_no_message(0.1)
