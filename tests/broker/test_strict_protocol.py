"""Strict protocol handling in the core: wrong acknowledgements, deep topics, expiry rounding."""

from __future__ import annotations

from typing import Any

import pytest
from support.core import Client, Harness

from mqttd.broker.retained import RetainedTree
from mqttd.broker.topic_tree import TopicTree
from mqttd.protocol import (
    Disconnect,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    ReasonCode,
    SubAck,
)
from mqttd.protocol.packets import PingReq


def _delivered(harness: Harness, level: int, qos: int) -> tuple[Client, Publish]:
    """A subscriber holding one QoS `qos` PUBLISH it has not acknowledged."""
    sub = harness.connected("sub", level=level)
    sub.subscribe("t", qos=qos)
    harness.connected("pub", level=level).publish("t", b"m", qos=qos)
    (publish,) = sub.publishes()
    assert publish.packet_id is not None
    return sub, publish


@pytest.mark.parametrize(
    ("qos", "wrong"),
    [
        (1, PubRec),  # PUBREC for a QoS 1 PUBLISH
        (1, PubComp),  # PUBCOMP for a QoS 1 PUBLISH
        (2, PubAck),  # PUBACK for a QoS 2 PUBLISH
        (2, PubComp),  # PUBCOMP before the PUBREL
    ],
)
@pytest.mark.parametrize("level", [4, 5])
def test_wrong_ack_type_for_an_inflight_id_is_a_protocol_error(
    harness: Harness, level: int, qos: int, wrong: Any
) -> None:
    sub, publish = _delivered(harness, level, qos)
    sub.send(wrong(publish.packet_id), PingReq())
    got = sub.packets()
    assert not any(isinstance(p, PingResp) for p in got), "the broker went on after it"
    if level == 5:
        assert got and isinstance(got[-1], Disconnect)
        assert got[-1].reason_code == ReasonCode.PROTOCOL_ERROR
    assert sub.closed


@pytest.mark.parametrize("level", [4, 5])
def test_acks_for_ids_not_in_flight_are_no_error(harness: Harness, level: int) -> None:
    sub = harness.connected("sub", level=level)
    sub.send(PubAck(7), PubRec(8), PubComp(9), PubRel(10), PingReq())
    got = sub.packets()
    assert isinstance(got[-1], PingResp) and not sub.closed
    # PUBREC and PUBREL of unknown ids are answered so the client can go on (4.3.3).
    assert [type(p) for p in got] == [PubRel, PubComp, PingResp]


def test_a_resent_pubrec_after_pubrel_gets_the_pubrel_again(harness: Harness) -> None:
    sub, publish = _delivered(harness, 5, 2)
    assert publish.packet_id is not None
    sub.send(PubRec(publish.packet_id))
    assert sub.expect(PubRel).packet_id == publish.packet_id
    sub.send(PubRec(publish.packet_id))
    assert sub.expect(PubRel).packet_id == publish.packet_id
    sub.send(PubComp(publish.packet_id), PingReq())
    assert isinstance(sub.packets()[-1], PingResp) and not sub.closed


# -- Message Expiry Interval forwarded ---------------------------------------------------


@pytest.mark.parametrize(("elapsed", "forwarded"), [(0.0, 5), (1.2, 4), (3.99, 2), (4.7, 1)])
def test_forwarded_message_expiry_is_rounded_up(
    harness: Harness, elapsed: float, forwarded: int
) -> None:
    sub = harness.connected(
        "sub", level=5, clean_start=False, properties=Properties(session_expiry_interval=100)
    )
    sub.subscribe("t", qos=1)
    sub.lose()
    harness.connected("pub", level=5).publish(
        "t", qos=1, properties=Properties(message_expiry_interval=5)
    )
    harness.advance(elapsed)
    back = harness.connected(
        "sub", level=5, clean_start=False, properties=Properties(session_expiry_interval=100)
    )
    (p,) = back.publishes()
    assert p.properties is not None and p.properties.message_expiry_interval == forwarded


# -- topic levels --------------------------------------------------------------------------


def test_max_topic_levels_defaults_to_200(harness: Harness) -> None:
    assert harness.settings.max_topic_levels == 200
    sub = harness.connected("sub", level=5)
    sub.subscribe("/".join(["a"] * 200))
    pub = harness.connected("pub", level=5)
    pub.publish("/".join(["a"] * 200))
    assert len(sub.publishes()) == 1


@pytest.mark.parametrize("level", [4, 5])
def test_publish_of_65536_levels_ends_the_connection(harness: Harness, level: int) -> None:
    pub = harness.connected("pub", level=level)
    pub.send_raw_publish("/" * 65535)
    if level == 5:
        disconnect = pub.expect(Disconnect)
        assert disconnect.reason_code == ReasonCode.TOPIC_NAME_INVALID
    assert pub.closed


def test_subscribe_of_65536_levels_is_refused(harness: Harness) -> None:
    v5 = harness.connected("v5", level=5)
    v5.send_raw_subscribe(1, ["/" * 65535])
    assert v5.expect(SubAck).reason_codes == [ReasonCode.TOPIC_FILTER_INVALID]
    v311 = harness.connected("v311", level=4)
    v311.send_raw_subscribe(1, ["/" * 65535, "+/" * 30000 + "#"])
    assert v311.expect(SubAck).reason_codes == [0x80, 0x80]


def test_will_topic_deeper_than_max_topic_levels_is_refused(harness: Harness) -> None:
    from mqttd.protocol import Will

    client = harness.client(level=5)
    connack = client.connect("w", will=Will("/" * 300, b"x"))
    assert connack.reason_code == ReasonCode.TOPIC_NAME_INVALID
    assert client.closed


def test_trees_handle_65536_levels_without_recursion() -> None:
    # max_topic_levels = 0 lets such topics in: no structure may recurse per level.
    deep = "/" * 65535
    tree: TopicTree[str, int] = TopicTree()
    tree.subscribe(deep, "c", 1)
    tree.subscribe(deep[:-1] + "#", "d", 1)
    tree.subscribe("+/" * 40000 + "#", "e", 1)
    assert {k for k, _ in tree.match(deep)} == {"c", "d", "e"}
    assert tree.unsubscribe(deep, "c")
    retained: RetainedTree[int] = RetainedTree()
    retained.set(deep, 1)
    assert retained.match(deep[:-1] + "#") == [(deep, 1)]
    assert retained.match("+/" * 65535 + "+") == [(deep, 1)]
    assert retained.delete(deep)
    retained.set(deep, 2)
    del tree, retained  # freeing a 65536-deep chain must not overflow the C stack either
