"""MQTT 5.0 features end to end: properties forwarded, aliases, flow control, expiry,
subscription identifiers and shared subscriptions.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from mqtt_raw import (
    CONTENT_TYPE,
    CORRELATION_DATA,
    MAXIMUM_PACKET_SIZE,
    MESSAGE_EXPIRY_INTERVAL,
    PAYLOAD_FORMAT_INDICATOR,
    PUBLISH,
    RECEIVE_MAXIMUM,
    RESPONSE_TOPIC,
    SESSION_EXPIRY_INTERVAL,
    SUBSCRIPTION_IDENTIFIER,
    TOPIC_ALIAS,
    USER_PROPERTY,
    gen_puback,
    gen_publish,
    gen_subscribe,
    prop_bin,
    prop_str,
    prop_u8,
    prop_u16,
    prop_u32,
    prop_user,
    prop_varint,
)
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .conftest import PahoFactory, RawFactory
from .paho_client import V5

pytestmark = pytest.mark.timeout(30)


def test_publish_properties_are_forwarded_unaltered(raw: RawFactory, uid: str, topic: str) -> None:
    subscriber = raw()
    subscriber.connect(f"{uid}-sub", proto_ver=5)
    subscriber.subscribe(1, topic, 0, proto_ver=5)
    publisher = raw()
    publisher.connect(f"{uid}-pub", proto_ver=5)
    props = (
        prop_u8(PAYLOAD_FORMAT_INDICATOR, 1)
        + prop_str(CONTENT_TYPE, "application/json")
        + prop_str(RESPONSE_TOPIC, f"{topic}/reply")
        + prop_bin(CORRELATION_DATA, b"\x00\x01corr")
        + prop_user("k1", "v1")
        + prop_user("k1", "v2")  # repeated keys keep their order [MQTT-3.3.2-18]
    )
    publisher.send(gen_publish(topic, payload=b"{}", proto_ver=5, properties=props))
    got = subscriber.expect_type(PUBLISH).publish(5).properties
    # [MQTT-3.3.2-4], [MQTT-3.3.2-15], [MQTT-3.3.2-16], [MQTT-3.3.2-17], [MQTT-3.3.2-20]
    assert got[PAYLOAD_FORMAT_INDICATOR] == [1]
    assert got[CONTENT_TYPE] == ["application/json"]
    assert got[RESPONSE_TOPIC] == [f"{topic}/reply"]
    assert got[CORRELATION_DATA] == [b"\x00\x01corr"]
    assert got[USER_PROPERTY] == [("k1", "v1"), ("k1", "v2")]


def test_topic_alias_set_then_used_alone(raw: RawFactory, uid: str, topic: str) -> None:
    subscriber = raw()
    subscriber.connect(f"{uid}-sub", proto_ver=5)
    subscriber.subscribe(1, f"{topic}/#", 0, proto_ver=5)
    publisher = raw()
    connack = publisher.connect(f"{uid}-pub", proto_ver=5)
    maximum = connack.properties().get(0x22, [0])[0]
    if not maximum:
        pytest.skip("broker accepts no topic aliases")
    long_topic = f"{topic}/a/rather/long/topic/name"
    publisher.send(
        gen_publish(long_topic, payload=b"1", proto_ver=5, properties=prop_u16(TOPIC_ALIAS, 1))
        + gen_publish("", payload=b"2", proto_ver=5, properties=prop_u16(TOPIC_ALIAS, 1))
    )
    first = subscriber.expect_type(PUBLISH).publish(5)
    second = subscriber.expect_type(PUBLISH).publish(5)
    # The subscriber gets the full topic; the publisher's alias is not forwarded.
    assert (first.topic, first.payload) == (long_topic, b"1")
    assert (second.topic, second.payload) == (long_topic, b"2")
    assert TOPIC_ALIAS not in second.properties


def test_receive_maximum_of_the_client_limits_unacknowledged_deliveries(
    raw: RawFactory, uid: str, topic: str
) -> None:
    subscriber = raw()
    subscriber.connect(f"{uid}-sub", proto_ver=5, properties=prop_u16(RECEIVE_MAXIMUM, 2))
    subscriber.subscribe(1, topic, 1, proto_ver=5)
    publisher = raw()
    publisher.connect(f"{uid}-pub", proto_ver=5)
    for i in range(5):
        publisher.send(gen_publish(topic, qos=1, mid=i + 1, payload=str(i).encode(), proto_ver=5))
    first = [subscriber.expect_type(PUBLISH).publish(5) for _ in range(2)]
    subscriber.expect_silence(0.3)  # [MQTT-3.3.4-9]: no third before an ack
    payloads = [m.payload for m in first]
    for message in first:
        subscriber.send(gen_puback(message.mid, proto_ver=5))
    rest = subscriber.receive_publishes(3, proto_ver=5)
    payloads += [m.payload for m in rest]
    assert payloads == [str(i).encode() for i in range(5)]


def test_messages_larger_than_the_clients_maximum_packet_size_are_not_sent(
    raw: RawFactory, uid: str, topic: str
) -> None:
    subscriber = raw()
    subscriber.connect(f"{uid}-sub", proto_ver=5, properties=prop_u32(MAXIMUM_PACKET_SIZE, 128))
    subscriber.subscribe(1, topic, 0, proto_ver=5)
    publisher = raw()
    publisher.connect(f"{uid}-pub", proto_ver=5)
    publisher.send(gen_publish(topic, payload=b"x" * 500, proto_ver=5))
    publisher.send(gen_publish(topic, payload=b"small", proto_ver=5))
    # [MQTT-3.1.2-25]: the large one is discarded as if delivered, the small one arrives.
    assert subscriber.expect_type(PUBLISH).publish(5).payload == b"small"


def test_expired_message_is_not_delivered_to_a_returning_session(
    raw: RawFactory, uid: str, topic: str
) -> None:
    session = prop_u32(SESSION_EXPIRY_INTERVAL, 60)
    subscriber = raw()
    subscriber.connect(uid, proto_ver=5, properties=session)
    subscriber.subscribe(1, topic, 1, proto_ver=5)
    subscriber.disconnect(proto_ver=5)
    publisher = raw()
    publisher.connect(f"{uid}-pub", proto_ver=5)
    short = prop_u32(MESSAGE_EXPIRY_INTERVAL, 1)
    publisher.send(
        gen_publish(topic, qos=1, mid=1, payload=b"stale", proto_ver=5, properties=short)
    )
    publisher.send(gen_publish(topic, qos=1, mid=2, payload=b"fresh", proto_ver=5))
    publisher.expect_type(4)
    publisher.expect_type(4)
    time.sleep(1.5)  # the expiry itself is under test
    again = raw()
    again.connect(uid, proto_ver=5, clean_session=False, session_present=True)
    [only] = again.receive_publishes(1, proto_ver=5)
    assert only.payload == b"fresh"  # [MQTT-3.3.2-5]
    again.expect_silence(0.3)
    again.disconnect(proto_ver=5)


def test_message_expiry_interval_is_reduced_by_time_waited(
    raw: RawFactory, uid: str, topic: str
) -> None:
    publisher = raw()
    publisher.connect(f"{uid}-pub", proto_ver=5)
    publisher.send(
        gen_publish(
            topic,
            qos=1,
            mid=1,
            retain=True,
            payload=b"r",
            proto_ver=5,
            properties=prop_u32(MESSAGE_EXPIRY_INTERVAL, 60),
        )
    )
    publisher.expect_type(4)
    time.sleep(1.1)
    subscriber = raw()
    subscriber.connect(f"{uid}-sub", proto_ver=5)
    subscriber.subscribe(1, topic, 1, proto_ver=5)
    [message] = subscriber.receive_publishes(1, proto_ver=5)
    remaining = message.properties[MESSAGE_EXPIRY_INTERVAL][0]
    assert isinstance(remaining, int) and remaining <= 59  # [MQTT-3.3.2-6]
    publisher.send(gen_publish(topic, retain=True, proto_ver=5))


def test_subscription_identifier_is_sent_with_matching_messages(
    raw: RawFactory, uid: str, topic: str
) -> None:
    subscriber = raw()
    subscriber.connect(uid, proto_ver=5)
    subscriber.send(
        gen_subscribe(
            1, f"{topic}/#", 0, proto_ver=5, properties=prop_varint(SUBSCRIPTION_IDENTIFIER, 4242)
        )
    )
    subscriber.expect_type(9)
    subscriber.send(gen_publish(f"{topic}/x", payload=b"id", proto_ver=5))
    message = subscriber.expect_type(PUBLISH).publish(5)
    assert message.properties.get(SUBSCRIPTION_IDENTIFIER) == [4242]  # [MQTT-3.3.4-3]


def test_shared_subscription_gives_each_message_to_one_member(
    paho: PahoFactory, uid: str, topic: str
) -> None:
    members = [paho(f"{uid}-m{i}", protocol=V5) for i in range(2)]
    for member in members:
        member.subscribe(f"$share/{uid}/{topic}", 1)
    publisher = paho(f"{uid}-pub", protocol=V5)
    for i in range(10):
        publisher.publish(topic, str(i).encode(), 1)
    received: Counter[bytes] = Counter()
    per_member = [0, 0]
    deadline = time.monotonic() + 5
    while sum(per_member) < 10 and time.monotonic() < deadline:
        for i, member in enumerate(members):
            while not member.messages.empty():
                received[member.messages.get_nowait().payload] += 1
                per_member[i] += 1
        time.sleep(0.02)
    for member in members:
        member.expect_no_message(0.2)  # and no second copy anywhere
    assert received == Counter(str(i).encode() for i in range(10))  # once each, none lost
    assert all(count > 0 for count in per_member), per_member  # the group shares them


def test_paho_user_properties_round_trip(paho: PahoFactory, uid: str, topic: str) -> None:
    subscriber = paho(f"{uid}-sub", protocol=V5)
    subscriber.subscribe(topic, 1)
    publisher = paho(f"{uid}-pub", protocol=V5)
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.UserProperty = [("a", "1"), ("b", "2")]
    publisher.publish(topic, b"x", 1, properties=properties)
    message = subscriber.expect_message()
    assert message.properties is not None
    assert getattr(message.properties, "UserProperty", None) == [("a", "1"), ("b", "2")]
