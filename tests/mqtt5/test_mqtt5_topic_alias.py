"""Topic aliases both ways (5.0 3.3.2.3.4): client -> server and server -> client (LRU)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from mqtt_raw import (
    PUBLISH,
    TOPIC_ALIAS,
    TOPIC_ALIAS_MAXIMUM,
    RawClient,
    gen_publish,
    prop_u16,
)
from support.core import Harness
from support.v5 import V5Client

from mqttd.broker.topic_alias import TopicAliases
from mqttd.protocol import Properties

ALIAS_SUBSCRIBER = Path(__file__).parent / "js" / "alias_subscriber.cjs"

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import InProcessBroker


def aliased_subscriber(
    broker: InProcessBroker, client_id: str, topic_filter: str, maximum: int
) -> RawClient:
    client = RawClient(broker.host, broker.port)
    client.connect(
        client_id,
        proto_ver=5,
        properties=prop_u16(TOPIC_ALIAS_MAXIMUM, maximum) if maximum else b"",
    )
    client.subscribe(1, topic_filter, 0, proto_ver=5)
    return client


def publish_all(broker: InProcessBroker, client_id: str, topics: list[str]) -> None:
    with RawClient(broker.host, broker.port) as publisher:
        publisher.connect(client_id, proto_ver=5)
        for i, topic in enumerate(topics):
            publisher.send(gen_publish(topic, payload=str(i).encode(), proto_ver=5))
        publisher.disconnect(proto_ver=5)


def wire(client: RawClient, count: int) -> list[tuple[str, int | None, bytes]]:
    """(topic on the wire, Topic Alias, payload) of the next `count` PUBLISH packets."""
    seen: list[tuple[str, int | None, bytes]] = []
    for _ in range(count):
        packet = client.read_packet()
        assert packet is not None and packet.type == PUBLISH
        view = packet.publish(5)
        alias = view.properties.get(TOPIC_ALIAS, [None])[0]
        assert alias is None or isinstance(alias, int)
        seen.append((view.topic, alias, view.payload))
    return seen


def test_server_aliases_first_use_sends_topic_later_uses_only_the_alias(
    v5broker: InProcessBroker, uid: str
) -> None:
    a, b, c = f"{uid}/sensor/a", f"{uid}/sensor/b", f"{uid}/sensor/c"
    with aliased_subscriber(v5broker, f"{uid}-sub", f"{uid}/#", 2) as sub:
        publish_all(v5broker, f"{uid}-pub", [a, a, b, c, a])
        assert wire(sub, 5) == [
            (a, 1, b"0"),  # first use: topic and a new alias
            ("", 1, b"1"),  # later use: the alias alone
            (b, 2, b"2"),
            (c, 1, b"3"),  # both taken: the least recently used (a's) is reassigned
            (a, 2, b"4"),  # a is back with the now least recently used alias (b's)
        ]


def test_no_server_aliases_without_a_topic_alias_maximum(
    v5broker: InProcessBroker, uid: str
) -> None:
    topic = f"{uid}/long/topic"
    with aliased_subscriber(v5broker, f"{uid}-sub", topic, 0) as sub:
        publish_all(v5broker, f"{uid}-pub", [topic, topic])
        assert wire(sub, 2) == [(topic, None, b"0"), (topic, None, b"1")]  # [MQTT-3.3.2-8]


def test_server_aliases_can_be_switched_off(
    broker_with: Callable[..., InProcessBroker], uid: str
) -> None:
    broker = broker_with(server_topic_aliases=False)
    topic = f"{uid}/long/topic"
    with aliased_subscriber(broker, f"{uid}-sub", topic, 10) as sub:
        publish_all(broker, f"{uid}-pub", [topic, topic])
        assert wire(sub, 2) == [(topic, None, b"0"), (topic, None, b"1")]


def test_server_aliases_start_afresh_on_a_new_connection(
    v5broker: InProcessBroker, uid: str
) -> None:
    topic = f"{uid}/long/topic"
    with aliased_subscriber(v5broker, f"{uid}-sub", topic, 4) as sub:
        publish_all(v5broker, f"{uid}-pub", [topic])
        assert wire(sub, 1) == [(topic, 1, b"0")]
    with aliased_subscriber(v5broker, f"{uid}-sub", topic, 4) as sub:
        publish_all(v5broker, f"{uid}-pub", [topic])
        assert wire(sub, 1) == [(topic, 1, b"0")]  # [MQTT-3.3.2-7]: not the old mapping


def test_mqtt_js_resolves_the_servers_aliases(
    v5broker: InProcessBroker, node_with_mqtt_js: tuple[str, Path], uid: str
) -> None:
    """A real client that asks for aliases (MQTT.js, Topic Alias Maximum 2) gets every
    topic right through first uses, alias-only uses and LRU reassignments."""
    node, node_modules = node_with_mqtt_js
    topics = [f"{uid}/x/one", f"{uid}/x/two", f"{uid}/x/one", f"{uid}/x/three", f"{uid}/x/one"]
    url = f"mqtt://{v5broker.host}:{v5broker.port}"
    proc = subprocess.Popen(
        [node, str(ALIAS_SUBSCRIBER), url, f"{uid}-sub", f"{uid}/x/#", str(len(topics)), "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, NODE_PATH=str(node_modules)),
    )
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        assert json.loads(ready) == {"event": "ready"}, ready + proc.stderr.read()  # type: ignore[union-attr]
        publish_all(v5broker, f"{uid}-pub", topics)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["topic"], e["payload"]) for e in events] == [
        (topic, str(i)) for i, topic in enumerate(topics)
    ], out + err
    assert proc.returncode == 0, err


def test_paho_gets_whole_topics_as_it_asks_for_no_aliases(
    v5broker: InProcessBroker, uid: str
) -> None:
    sub = V5Client(v5broker.host, v5broker.port, f"{uid}-sub")
    pub = V5Client(v5broker.host, v5broker.port, f"{uid}-pub")
    with sub, pub:
        sub.connect()
        pub.connect()
        sub.subscribe(f"{uid}/#")
        for _ in range(3):
            pub.publish(f"{uid}/same/topic", b"x")
        assert [m.topic for m in sub.expect_messages(3)] == [f"{uid}/same/topic"] * 3


# -- client -> server ------------------------------------------------------------------------


def test_client_alias_set_then_used_reaches_subscribers_with_the_topic(
    v5broker: InProcessBroker, uid: str
) -> None:
    topic = f"{uid}/alias/in"
    with (
        aliased_subscriber(v5broker, f"{uid}-sub", topic, 0) as sub,
        RawClient(v5broker.host, v5broker.port) as pub,
    ):
        pub.connect(f"{uid}-pub", proto_ver=5)
        pub.send(gen_publish(topic, payload=b"1", proto_ver=5, properties=prop_u16(TOPIC_ALIAS, 3)))
        pub.send(gen_publish("", payload=b"2", proto_ver=5, properties=prop_u16(TOPIC_ALIAS, 3)))
        assert wire(sub, 2) == [(topic, None, b"1"), (topic, None, b"2")]


@pytest.mark.parametrize("alias", [0, 11])
def test_client_alias_zero_or_above_our_maximum_gets_disconnect_0x94(
    v5broker: InProcessBroker, uid: str, alias: int
) -> None:
    with RawClient(v5broker.host, v5broker.port) as client:
        connack = client.connect(uid, proto_ver=5)
        assert connack.properties()[TOPIC_ALIAS_MAXIMUM] == [10]
        client.send(
            gen_publish("t/x", payload=b"", proto_ver=5, properties=prop_u16(TOPIC_ALIAS, alias))
        )
        client.expect_disconnect(0x94)  # [MQTT-3.3.2-9] [MQTT-3.3.2-10]


def test_client_unknown_alias_with_an_empty_topic_gets_disconnect_0x82(
    v5broker: InProcessBroker, uid: str
) -> None:
    with RawClient(v5broker.host, v5broker.port) as client:
        client.connect(uid, proto_ver=5)
        client.send(gen_publish("", payload=b"", proto_ver=5, properties=prop_u16(TOPIC_ALIAS, 4)))
        client.expect_disconnect(0x82)


# -- the policy, at unit level -----------------------------------------------------------------


def test_alias_policy_is_least_recently_used() -> None:
    aliases = TopicAliases(3)
    assert [aliases.assign(t) for t in ("aaaa", "bbbb", "cccc")] == [
        (1, False),
        (2, False),
        (3, False),
    ]
    assert aliases.assign("aaaa") == (1, True)  # a is now the most recently used
    assert aliases.assign("dddd") == (2, False)  # b was the least recently used
    assert aliases.assign("bbbb") == (3, False)  # then c
    assert len(aliases) == 3


def test_short_topics_are_never_aliased() -> None:
    aliases = TopicAliases(3)
    assert aliases.assign("a/b") == (0, False)  # the property would cost as much
    assert len(aliases) == 0


def test_a_forgotten_alias_is_reused_not_leaked() -> None:
    aliases = TopicAliases(2)
    assert aliases.assign("aaaa") == (1, False)
    aliases.forget("aaaa")
    assert aliases.assign("bbbb") == (1, False)
    assert aliases.assign("cccc") == (2, False)
    assert aliases.assign("aaaa") == (1, False)  # evicts b: a is sent with its topic again


def test_an_aliased_message_too_large_for_the_client_does_not_keep_its_alias() -> None:
    harness = Harness()
    sub = harness.connected(
        "sub", level=5, properties=Properties(topic_alias_maximum=5, maximum_packet_size=60)
    )
    sub.subscribe("long/#")
    pub = harness.connected("pub", level=5)
    pub.publish("long/topic/name", b"x" * 100)  # too large: not sent, alias not kept
    pub.publish("long/topic/name", b"small")
    (p,) = sub.publishes()
    # The dropped message's alias was never learnt by the client: the topic comes again.
    assert p.topic == "long/topic/name" and p.properties is not None
    assert p.properties.topic_alias == 1
    assert harness.broker.stats.messages_too_large == 1
