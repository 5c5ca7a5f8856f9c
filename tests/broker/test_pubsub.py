"""Subscribe, unsubscribe and routing: reason codes, QoS, options, overlapping filters."""

from __future__ import annotations

from typing import Any

from support.core import Harness

from mqttd.protocol import (
    Disconnect,
    Properties,
    ReasonCode,
    SubAck,
    Subscription,
)


def test_qos0_message_reaches_a_matching_subscriber(harness: Harness) -> None:
    sub = harness.connected("sub")
    assert sub.subscribe("a/+/c").reason_codes == [0]
    harness.connected("pub").publish("a/b/c", b"hello")
    (p,) = sub.publishes()
    assert (p.topic, p.payload, p.qos, p.retain, p.packet_id) == ("a/b/c", b"hello", 0, False, None)


def test_message_is_not_sent_to_non_matching_subscribers(harness: Harness) -> None:
    sub = harness.connected("sub")
    sub.subscribe("a/b")
    harness.connected("pub").publish("a/c")
    assert sub.packets() == []


def test_delivered_qos_is_the_minimum_of_published_and_granted(harness: Harness) -> None:
    low = harness.connected("low")
    low.subscribe("t", qos=0)
    high = harness.connected("high")
    high.subscribe("t", qos=2)
    pub = harness.connected("pub")
    pub.publish("t", qos=1)
    assert [p.qos for p in low.publishes()] == [0]
    assert [p.qos for p in high.publishes()] == [1]


def test_granted_qos_is_capped_by_maximum_qos(make_harness: Any) -> None:
    harness = make_harness(maximum_qos=1)
    sub = harness.connected("sub", level=5)
    assert sub.subscribe("t", qos=2).reason_codes == [1]


def test_3_1_1_overlapping_subscriptions_deliver_once_at_the_highest_qos(
    harness: Harness,
) -> None:
    sub = harness.connected("sub")
    sub.subscribe(Subscription("a/#", 0), Subscription("a/b", 2), Subscription("+/b", 1))
    harness.connected("pub").publish("a/b", qos=2)
    got = sub.publishes()
    assert [(p.topic, p.qos) for p in got] == [("a/b", 2)]


def test_5_overlapping_subscriptions_deliver_once_with_every_subscription_id(
    harness: Harness,
) -> None:
    sub = harness.connected("sub", level=5)
    sub.subscribe("a/#", qos=1, packet_id=1, properties=Properties(subscription_identifier=(7,)))
    sub.subscribe("a/b", qos=0, packet_id=2, properties=Properties(subscription_identifier=(9,)))
    harness.connected("pub").publish("a/b", qos=1)
    (p,) = sub.publishes()
    assert p.qos == 1
    assert p.properties is not None
    assert sorted(p.properties.subscription_identifier) == [7, 9]


def test_5_subscription_identifier_is_sent_with_each_delivery(harness: Harness) -> None:
    sub = harness.connected("sub", level=5)
    sub.subscribe("t", properties=Properties(subscription_identifier=(300,)))
    other = harness.connected("other", level=5)
    other.subscribe("t")
    harness.connected("pub").publish("t")
    (p,) = sub.publishes()
    assert p.properties is not None and p.properties.subscription_identifier == (300,)
    (q,) = other.publishes()
    assert q.properties is None


def test_3x_suback_says_0x80_for_an_invalid_filter(harness: Harness) -> None:
    sub = harness.connected("sub")
    sub.send_raw_subscribe(1, ["ok/#", "bad/#/x", "a+"], qos=1)
    assert sub.expect(SubAck).reason_codes == [1, 0x80, 0x80]


def test_5_suback_says_0x8f_for_an_invalid_filter(harness: Harness) -> None:
    sub = harness.connected("sub", level=5)
    sub.send_raw_subscribe(1, ["bad/#/x"])
    assert sub.expect(SubAck).reason_codes == [ReasonCode.TOPIC_FILTER_INVALID]


def test_5_suback_says_0x9e_when_shared_subscriptions_are_off(make_harness: Any) -> None:
    harness = make_harness(shared_subscription_available=False)
    sub = harness.connected("sub", level=5)
    codes = sub.subscribe("$share/g/t").reason_codes
    assert codes == [ReasonCode.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED]


def test_5_suback_says_0xa2_when_wildcards_are_off(make_harness: Any) -> None:
    harness = make_harness(wildcard_subscription_available=False)
    sub = harness.connected("sub", level=5)
    codes = sub.subscribe("a/+", "a/b").reason_codes
    assert codes == [ReasonCode.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED, 0]


def test_5_suback_says_0xa1_when_subscription_ids_are_off(make_harness: Any) -> None:
    harness = make_harness(subscription_identifier_available=False)
    sub = harness.connected("sub", level=5)
    codes = sub.subscribe("t", properties=Properties(subscription_identifier=(1,))).reason_codes
    assert codes == [ReasonCode.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED]


def test_subscription_quota_per_client(make_harness: Any) -> None:
    harness = make_harness(max_subscriptions_per_client=2)
    sub = harness.connected("sub", level=5)
    codes = sub.subscribe("a", "b", "a", "c").reason_codes
    assert codes == [0, 0, 0, ReasonCode.QUOTA_EXCEEDED]


def test_unsubscribe_stops_delivery(harness: Harness) -> None:
    sub = harness.connected("sub")
    sub.subscribe("t")
    unsuback = sub.unsubscribe("t")
    assert unsuback.reason_codes == []
    harness.connected("pub").publish("t")
    assert sub.packets() == []
    assert harness.broker.sessions["sub"].subscriptions == {}


def test_5_unsuback_says_0x11_when_no_subscription_existed(harness: Harness) -> None:
    sub = harness.connected("sub", level=5)
    sub.subscribe("t")
    assert sub.unsubscribe("t", "never").reason_codes == [0, ReasonCode.NO_SUBSCRIPTION_EXISTED]


def test_dollar_topics_are_not_matched_by_a_leading_wildcard(harness: Harness) -> None:
    everything = harness.connected("all")
    everything.subscribe("#", "+/info")
    sys_watcher = harness.connected("sys")
    sys_watcher.subscribe("$SYS/#")
    harness.broker.publish(_message("$SYS/info"))
    assert everything.packets() == []
    assert [p.topic for p in sys_watcher.publishes()] == ["$SYS/info"]


def test_5_no_local_skips_the_publishers_own_subscription(harness: Harness) -> None:
    client = harness.connected("me", level=5)
    client.subscribe(Subscription("t", 0, no_local=True))
    other = harness.connected("other", level=5)
    other.subscribe(Subscription("t", 0, no_local=True))
    client.publish("t", b"mine")
    assert client.packets() == []
    assert [p.payload for p in other.publishes()] == [b"mine"]


def test_normal_delivery_clears_retain_unless_retain_as_published(harness: Harness) -> None:
    plain = harness.connected("plain", level=5)
    plain.subscribe("t")
    rap = harness.connected("rap", level=5)
    rap.subscribe(Subscription("t", 0, retain_as_published=True))
    legacy = harness.connected("legacy", level=4)
    legacy.subscribe("t")
    harness.connected("pub").publish("t", b"r", retain=True)
    assert [p.retain for p in plain.publishes()] == [False]
    assert [p.retain for p in rap.publishes()] == [True]
    assert [p.retain for p in legacy.publishes()] == [False]


def test_5_properties_pass_through_unchanged_and_in_order(harness: Harness) -> None:
    sub = harness.connected("sub", level=5)
    sub.subscribe("t", qos=1)
    props = Properties(
        payload_format_indicator=1,
        content_type="application/json",
        response_topic="reply/here",
        correlation_data=b"\x01\x02",
        user_property=(("b", "2"), ("a", "1"), ("b", "3")),
    )
    harness.connected("pub", level=5).publish("t", b"{}", qos=1, properties=props)
    (p,) = sub.publishes()
    assert p.properties == props


def test_3x_subscriber_gets_a_5_message_without_properties(harness: Harness) -> None:
    sub = harness.connected("sub", level=4)
    sub.subscribe("t")
    props = Properties(user_property=(("k", "v"),))
    harness.connected("pub", level=5).publish("t", b"x", properties=props)
    (p,) = sub.publishes()
    assert p.properties is None and p.payload == b"x"


def test_shared_subscription_delivers_each_message_to_one_member(harness: Harness) -> None:
    a = harness.connected("a", level=5)
    b = harness.connected("b", level=5)
    a.subscribe("$share/g/jobs/#", qos=1)
    b.subscribe("$share/g/jobs/#", qos=1)
    pub = harness.connected("pub")
    for i in range(4):
        pub.publish("jobs/x", bytes([i]))
    got_a = [p.payload for p in a.publishes()]
    got_b = [p.payload for p in b.publishes()]
    assert len(got_a) == 2 and len(got_b) == 2
    assert sorted(got_a + got_b) == [bytes([i]) for i in range(4)]


def test_shared_subscription_prefers_members_online(harness: Harness) -> None:
    a = harness.connected("a", level=5, clean_start=False, properties=_expiry(100))
    b = harness.connected("b", level=5)
    a.subscribe("$share/g/t", qos=1)
    b.subscribe("$share/g/t", qos=1)
    a.lose()
    pub = harness.connected("pub")
    for _ in range(3):
        pub.publish("t", qos=1)
    assert len(b.publishes()) == 3


def test_shared_unsubscribe_removes_the_member(harness: Harness) -> None:
    a = harness.connected("a", level=5)
    a.subscribe("$share/g/t")
    assert a.unsubscribe("$share/g/t").reason_codes == [0]
    harness.connected("pub").publish("t")
    assert a.packets() == []


def test_publish_to_a_topic_with_a_wildcard_ends_the_connection(harness: Harness) -> None:
    pub = harness.connected("pub", level=5)
    pub.send_raw_publish("a/+")
    assert pub.expect(Disconnect).reason_code == ReasonCode.TOPIC_NAME_INVALID
    assert pub.closed


def test_3x_publish_to_a_topic_with_a_wildcard_closes_silently(harness: Harness) -> None:
    pub = harness.connected("pub", level=4)
    pub.send_raw_publish("a/#")
    assert pub.closed and pub.packets() == []


def test_5_publish_above_maximum_qos_gets_disconnect_0x9b(make_harness: Any) -> None:
    harness = make_harness(maximum_qos=1)
    pub = harness.connected("pub", level=5)
    pub.publish("t", qos=2)
    assert pub.expect(Disconnect).reason_code == ReasonCode.QOS_NOT_SUPPORTED


def test_5_retained_publish_when_retain_is_off_gets_disconnect_0x9a(make_harness: Any) -> None:
    harness = make_harness(retain_available=False)
    pub = harness.connected("pub", level=5)
    pub.publish("t", retain=True)
    assert pub.expect(Disconnect).reason_code == ReasonCode.RETAIN_NOT_SUPPORTED


def test_one_encoding_is_shared_by_receivers_of_the_same_kind(harness: Harness) -> None:
    subs = [harness.connected(f"s{i}") for i in range(3)]
    for s in subs:
        s.subscribe("t", qos=1)
    harness.connected("pub").publish("t", b"shared", qos=1)
    got = [s.publishes()[0] for s in subs]
    assert all(p.payload == b"shared" and p.packet_id == 1 for p in got)
    assert harness.broker.stats.publish_sent == 3


def _message(topic: str) -> Any:
    from mqttd.broker.message import Message

    return Message(topic, b"x")


def _expiry(seconds: int) -> Properties:
    return Properties(session_expiry_interval=seconds)


def test_5_publish_deeper_than_max_topic_levels_gets_disconnect_0x90(make_harness: Any) -> None:
    harness = make_harness(max_topic_levels=3)
    pub = harness.connected("pub", level=5)
    pub.publish("a/b/c")
    assert not pub.closed
    pub.publish("a/b/c/d")
    assert pub.expect(Disconnect).reason_code == ReasonCode.TOPIC_NAME_INVALID


def test_subscribe_deeper_than_max_topic_levels_is_refused(make_harness: Any) -> None:
    harness = make_harness(max_topic_levels=2, max_topic_length=10)
    sub = harness.connected("sub", level=5)
    codes = sub.subscribe("a/b", "a/b/c", "x" * 11).reason_codes
    assert codes == [0, ReasonCode.TOPIC_FILTER_INVALID, ReasonCode.TOPIC_FILTER_INVALID]
