"""MQTT 5.0 features in the core: message expiry, topic aliases, maximum packet size."""

from __future__ import annotations

from typing import Any

from support.core import Harness

from mqttd.protocol import Disconnect, PacketTooLarge, Properties, Publish, ReasonCode


def _offline_subscriber(harness: Harness, topic: str = "t") -> None:
    sub = harness.connected(
        "sub", level=5, clean_start=False, properties=Properties(session_expiry_interval=1000)
    )
    sub.subscribe(topic, qos=1)
    sub.lose()


def _back(harness: Harness) -> list[Publish]:
    back = harness.connected(
        "sub", level=5, clean_start=False, properties=Properties(session_expiry_interval=1000)
    )
    return back.publishes()


def test_message_expiry_counts_down_while_queued(harness: Harness) -> None:
    _offline_subscriber(harness)
    pub = harness.connected("pub", level=5)
    pub.publish("t", b"m", qos=1, properties=Properties(message_expiry_interval=60))
    harness.advance(25)
    (p,) = _back(harness)
    assert p.properties is not None and p.properties.message_expiry_interval == 35


def test_expired_message_is_never_delivered(harness: Harness) -> None:
    _offline_subscriber(harness)
    pub = harness.connected("pub", level=5)
    pub.publish("t", b"old", qos=1, properties=Properties(message_expiry_interval=10))
    pub.publish("t", b"fresh", qos=1, packet_id=2)
    harness.advance(11)
    assert [p.payload for p in _back(harness)] == [b"fresh"]
    assert harness.broker.stats.messages_expired == 1


def test_live_delivery_carries_the_full_expiry_interval(harness: Harness) -> None:
    sub = harness.connected("sub", level=5)
    sub.subscribe("t")
    harness.connected("pub", level=5).publish(
        "t", properties=Properties(message_expiry_interval=99)
    )
    (p,) = sub.publishes()
    assert p.properties is not None and p.properties.message_expiry_interval == 99


def test_topic_alias_is_set_then_used_with_an_empty_topic(harness: Harness) -> None:
    sub = harness.connected("sub", level=5)
    sub.subscribe("long/topic/name")
    pub = harness.connected("pub", level=5)
    pub.publish("long/topic/name", b"1", properties=Properties(topic_alias=3))
    pub.publish("", b"2", properties=Properties(topic_alias=3))
    got = sub.publishes()
    assert [(p.topic, p.payload) for p in got] == [
        ("long/topic/name", b"1"),
        ("long/topic/name", b"2"),
    ]
    # The alias is the publisher's business: subscribers never see it.
    assert all(p.properties is None for p in got)


def test_topic_alias_can_be_remapped(harness: Harness) -> None:
    sub = harness.connected("sub", level=5)
    sub.subscribe("#")
    pub = harness.connected("pub", level=5)
    pub.publish("a", properties=Properties(topic_alias=1))
    pub.publish("b", properties=Properties(topic_alias=1))
    pub.publish("", properties=Properties(topic_alias=1))
    assert [p.topic for p in sub.publishes()] == ["a", "b", "b"]


def test_topic_alias_above_our_maximum_gets_disconnect_0x94(make_harness: Any) -> None:
    harness = make_harness(topic_alias_maximum=5)
    pub = harness.connected("pub", level=5)
    pub.publish("a", properties=Properties(topic_alias=6))
    assert pub.expect(Disconnect).reason_code == ReasonCode.TOPIC_ALIAS_INVALID
    assert pub.closed


def test_topic_alias_when_none_are_allowed_gets_disconnect_0x94(make_harness: Any) -> None:
    harness = make_harness(topic_alias_maximum=0)
    pub = harness.connected("pub", level=5)
    pub.publish("a", properties=Properties(topic_alias=1))
    assert pub.expect(Disconnect).reason_code == ReasonCode.TOPIC_ALIAS_INVALID


def test_unknown_topic_alias_with_an_empty_topic_gets_disconnect_0x82(harness: Harness) -> None:
    pub = harness.connected("pub", level=5)
    pub.publish("", properties=Properties(topic_alias=2))
    assert pub.expect(Disconnect).reason_code == ReasonCode.PROTOCOL_ERROR


def test_topic_aliases_do_not_outlive_the_connection(harness: Harness) -> None:
    pub = harness.connected("pub", level=5)
    pub.publish("a", properties=Properties(topic_alias=1))
    pub.disconnect()
    again = harness.connected("pub", level=5)
    again.publish("", properties=Properties(topic_alias=1))
    assert again.expect(Disconnect).reason_code == ReasonCode.PROTOCOL_ERROR


def test_5_packet_larger_than_our_maximum_gets_disconnect_0x95(make_harness: Any) -> None:
    harness = make_harness(max_packet_size=100)
    pub = harness.connected("pub", level=5)
    pub.publish("t", b"x" * 200)
    assert pub.expect(Disconnect).reason_code == PacketTooLarge.reason_code
    assert pub.closed


def test_3x_packet_larger_than_our_maximum_closes_the_socket(make_harness: Any) -> None:
    harness = make_harness(max_packet_size=100)
    pub = harness.connected("pub", level=4)
    pub.publish("t", b"x" * 200)
    assert pub.closed and pub.packets() == []


def test_message_larger_than_the_clients_maximum_is_not_sent(harness: Harness) -> None:
    small = harness.connected("small", level=5, properties=Properties(maximum_packet_size=50))
    small.subscribe("t", qos=1)
    pub = harness.connected("pub")
    pub.publish("t", b"y" * 100, qos=1)
    pub.publish("t", b"ok", qos=1, packet_id=2)
    assert [p.payload for p in small.publishes()] == [b"ok"]
    assert harness.broker.stats.messages_too_large == 1
    assert harness.broker.sessions["small"].inflight.keys() == {1}


def test_client_publish_with_a_subscription_identifier_is_a_protocol_error(
    harness: Harness,
) -> None:
    pub = harness.connected("pub", level=5)
    pub.publish("t", properties=Properties(subscription_identifier=(1,)))
    assert pub.expect(Disconnect).reason_code == ReasonCode.PROTOCOL_ERROR
