"""Topic filter matching, table-driven from the examples of spec section 4.7, on a fresh
broker so filters can start at the top level.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from mqtt_raw import (
    PINGRESP,
    PUBACK,
    PUBLISH,
    RawClient,
    gen_pingreq,
    gen_publish,
)

if TYPE_CHECKING:
    from conftest import MqttdProcess

pytestmark = pytest.mark.timeout(30)

TOPICS = [
    "sport",
    "sport/",
    "sport/tennis",
    "sport/tennis/player1",
    "sport/tennis/player1/ranking",
    "sport/tennis/player1/score/wimbledon",
    "sport/tennis/player2",
    "sport/football/player1",
    "/finance",
    "finance",
    "a/b/c",
    "a//c",
    "$other/sport",
]

# filter -> the topics of TOPICS it matches (spec 4.7.1 and 4.7.2 examples and more).
# No $SYS: the broker's own $SYS tree would arrive, and client publishes there may be refused.
EXPECTED = {
    "sport/tennis/player1/#": {
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/tennis/player1/score/wimbledon",
    },
    "sport/#": {
        "sport",
        "sport/",
        "sport/tennis",
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/tennis/player1/score/wimbledon",
        "sport/tennis/player2",
        "sport/football/player1",
    },
    "#": set(TOPICS) - {"$other/sport"},  # [MQTT-4.7.2-1]
    "sport/tennis/+": {"sport/tennis/player1", "sport/tennis/player2"},
    "sport/+": {"sport/", "sport/tennis"},  # not "sport" [MQTT-4.7.1-3]
    "+": {"sport", "finance"},
    "+/+": {"sport/", "sport/tennis", "/finance"},
    "/+": {"/finance"},
    "+/tennis/#": {
        "sport/tennis",
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/tennis/player1/score/wimbledon",
        "sport/tennis/player2",
    },
    "+/+/player1": {"sport/tennis/player1", "sport/football/player1"},
    "a/+/c": {"a/b/c", "a//c"},
    "+/sport": set(),  # "$other/sport" is not matched by a leading "+"
    "$other/+": {"$other/sport"},
    "sport/tennis/player1": {"sport/tennis/player1"},
    "Sport": set(),  # case-sensitive [MQTT-4.7.3-4]
}


def _drain(client: RawClient) -> set[str]:
    """Topics delivered before a PINGRESP: the broker writes to one socket in order."""
    client.send(gen_pingreq())
    topics: set[str] = set()
    while True:
        packet = client.read_packet()
        assert packet is not None, "closed"
        if packet.type == PINGRESP:
            return topics
        assert packet.type == PUBLISH, packet.describe()
        topics.add(packet.publish().topic)


def test_topic_filters_match_as_the_specification_says(mqttd_process: MqttdProcess) -> None:
    server = mqttd_process
    subscribers: dict[str, RawClient] = {}
    try:
        for i, topic_filter in enumerate(EXPECTED):
            client = RawClient(server.host, server.port)
            subscribers[topic_filter] = client
            client.connect(f"match-{i}")
            client.subscribe(1, topic_filter, 0)
        publisher = RawClient(server.host, server.port)
        publisher.connect("match-pub")
        for mid, topic in enumerate(TOPICS, start=1):
            publisher.send(gen_publish(topic, qos=1, mid=mid, payload=b"m"))
        for _ in TOPICS:  # every message routed before the barrier below
            publisher.expect_type(PUBACK)
        publisher.close()
        got = {topic_filter: _drain(client) for topic_filter, client in subscribers.items()}
    finally:
        for client in subscribers.values():
            client.close()
    wrong = {f: (got[f], want) for f, want in EXPECTED.items() if got[f] != want}
    assert not wrong, "\n".join(f"{f!r}: got {g}, want {w}" for f, (g, w) in wrong.items())
