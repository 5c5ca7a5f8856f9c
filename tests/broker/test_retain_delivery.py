"""Retained messages through the broker: stored, replaced, cleared, sent on subscribe."""

from __future__ import annotations

from typing import Any

from support.core import Harness

from mqttd.broker.message import Message
from mqttd.broker.retained_feed import FEED_BYTES
from mqttd.protocol import Properties, Subscription


def test_retained_message_is_sent_to_a_new_subscriber_with_retain_1(harness: Harness) -> None:
    harness.connected("pub").publish("status/a", b"on", qos=1, retain=True)
    sub = harness.connected("sub")
    sub.subscribe("status/a", qos=1)
    (p,) = sub.publishes()
    assert (p.topic, p.payload, p.retain, p.qos) == ("status/a", b"on", True, 1)


def test_retained_message_is_replaced_by_the_next_one(harness: Harness) -> None:
    pub = harness.connected("pub")
    pub.publish("s", b"old", retain=True)
    pub.publish("s", b"new", retain=True)
    sub = harness.connected("sub")
    sub.subscribe("s")
    assert [p.payload for p in sub.publishes()] == [b"new"]
    assert len(harness.broker.retained) == 1


def test_empty_retained_payload_clears_the_topic(harness: Harness) -> None:
    pub = harness.connected("pub")
    pub.publish("s", b"x", retain=True)
    watcher = harness.connected("watcher")
    watcher.subscribe("s")
    watcher.packets()
    pub.publish("s", b"", retain=True)
    # The clearing message itself still goes to current subscribers [MQTT-3.3.1-10].
    assert [p.payload for p in watcher.publishes()] == [b""]
    sub = harness.connected("sub")
    sub.subscribe("s")
    assert sub.packets() == []
    assert len(harness.broker.retained) == 0
    assert harness.store._retained == {}


def test_retained_messages_match_wildcard_filters(harness: Harness) -> None:
    pub = harness.connected("pub")
    for topic in ("home/a/temp", "home/b/temp", "home/a/hum", "$SYS/x"):
        pub.publish(topic, topic.encode(), retain=True)
    sub = harness.connected("sub")
    sub.subscribe("home/+/temp")
    assert sorted(p.topic for p in sub.publishes()) == ["home/a/temp", "home/b/temp"]
    everything = harness.connected("all")
    everything.subscribe("#")
    assert sorted(p.topic for p in everything.publishes()) == [
        "home/a/hum",
        "home/a/temp",
        "home/b/temp",
    ]


def test_retained_delivery_qos_is_the_minimum_of_stored_and_granted(harness: Harness) -> None:
    harness.connected("pub").publish("s", qos=2, retain=True)
    sub = harness.connected("sub")
    sub.subscribe("s", qos=1)
    assert [p.qos for p in sub.publishes()] == [1]


def test_retained_messages_are_recorded_in_the_store(harness: Harness) -> None:
    harness.connected("pub").publish("s", b"v", retain=True)
    assert harness.store._retained["s"].payload == b"v"


def test_5_retain_handling_1_sends_only_for_a_new_subscription(harness: Harness) -> None:
    harness.connected("pub").publish("s", b"v", retain=True)
    sub = harness.connected("sub", level=5)
    sub.subscribe(Subscription("s", 0, retain_handling=1))
    assert len(sub.publishes()) == 1
    sub.subscribe(Subscription("s", 0, retain_handling=1), packet_id=2)
    assert sub.publishes() == []


def test_5_retain_handling_0_sends_on_every_subscribe(harness: Harness) -> None:
    harness.connected("pub").publish("s", b"v", retain=True)
    sub = harness.connected("sub", level=5)
    sub.subscribe(Subscription("s", 0, retain_handling=0))
    assert len(sub.publishes()) == 1
    sub.subscribe(Subscription("s", 0, retain_handling=0), packet_id=2)
    assert len(sub.publishes()) == 1


def test_5_retain_handling_2_never_sends(harness: Harness) -> None:
    harness.connected("pub").publish("s", b"v", retain=True)
    sub = harness.connected("sub", level=5)
    sub.subscribe(Subscription("s", 0, retain_handling=2))
    assert sub.publishes() == []


def test_shared_subscription_gets_no_retained_messages(harness: Harness) -> None:
    harness.connected("pub").publish("s", b"v", retain=True)
    sub = harness.connected("sub", level=5)
    sub.subscribe("$share/g/s")
    assert sub.publishes() == []


def test_expired_retained_message_is_not_delivered_and_is_forgotten(harness: Harness) -> None:
    pub = harness.connected("pub", level=5)
    pub.publish("s", b"v", retain=True, properties=Properties(message_expiry_interval=10))
    harness.advance(11)
    sub = harness.connected("sub", level=5)
    sub.subscribe("s")
    assert sub.publishes() == []
    assert len(harness.broker.retained) == 0


def test_retained_delivery_carries_the_remaining_expiry(harness: Harness) -> None:
    pub = harness.connected("pub", level=5)
    pub.publish("s", b"v", retain=True, properties=Properties(message_expiry_interval=100))
    harness.advance(30)
    sub = harness.connected("sub", level=5)
    sub.subscribe("s")
    (p,) = sub.publishes()
    assert p.properties is not None and p.properties.message_expiry_interval == 70


def test_retained_subscribe_in_3_1_1_gets_retain_flag(make_harness: Any) -> None:
    harness = make_harness()
    harness.connected("pub", level=5).publish("s", b"v", retain=True)
    sub = harness.connected("sub", level=4)
    sub.subscribe("#")
    assert [p.retain for p in sub.publishes()] == [True]


def test_sys_retained_messages_are_not_recorded_in_the_store(harness: Harness) -> None:
    from mqttd.broker.message import Message

    harness.broker.publish(Message("$SYS/broker/uptime", b"5", 0, True))
    assert harness.broker.retained.get("$SYS/broker/uptime") is not None
    assert harness.store._retained == {}


# -- many retained messages go out as the client takes them (retained_feed.py) ---------------


# Enough 200-byte messages for about three steps of a feed.
MANY = 3 * FEED_BYTES // 200


def _fill(harness: Harness, count: int, payload: bytes = bytes(200)) -> None:
    for i in range(count):
        topic = f"r/{i // 100}/{i}"
        harness.broker.retained.set(topic, Message(topic, payload, 1, True))


def test_a_hash_subscription_gets_many_retained_messages_in_steps(harness: Harness) -> None:
    count = MANY
    _fill(harness, count)
    sub = harness.connected("sub")
    sub.subscribe("#")
    first = sub.publishes()
    # One step at once, the rest on later scheduler ticks, not all in one go.
    assert 0 < len(first) < count
    assert sum(len(p.payload) for p in first) <= FEED_BYTES + 200
    got = first
    for _ in range(100):
        harness.advance(0.01)
        got += sub.publishes()
        if len(got) >= count:
            break
    assert len(got) == count
    assert all(p.retain for p in got)
    assert sorted(p.topic for p in got) == sorted(f"r/{i // 100}/{i}" for i in range(count))


def test_the_retained_feed_waits_while_the_socket_is_full(harness: Harness) -> None:
    _fill(harness, MANY)
    sub = harness.connected("sub")
    sub.subscribe("#")
    assert sub.publishes()
    sub.conn.writable_changed(False)  # the client stopped reading
    harness.advance(1.0)
    assert sub.publishes() == []
    sub.conn.writable_changed(True)  # drained below the low-water mark: the next step
    step = sub.publishes()
    assert 0 < sum(len(p.payload) for p in step) <= FEED_BYTES + 200


def test_a_qos1_retained_feed_goes_on_as_the_client_acknowledges(harness: Harness) -> None:
    count = 3000
    _fill(harness, count)
    sub = harness.connected("sub")
    sub.subscribe("#", qos=1)
    got: list[Any] = []
    for _ in range(2000):
        batch = sub.publishes()
        if not batch:
            harness.advance(0.01)
            batch = sub.publishes()
            if not batch:
                break
        for p in batch:
            sub.ack(p)
        got += batch
    assert len(got) == count
    assert len({p.topic for p in got}) == count
    session = harness.broker.sessions["sub"]
    assert not session.inflight and not session.queue_length


def test_a_message_cleared_before_the_feed_reaches_it_is_not_sent(harness: Harness) -> None:
    _fill(harness, MANY)
    sub = harness.connected("sub")
    sub.subscribe("#")
    seen = {p.topic for p in sub.publishes()}
    gone = next(f"r/{i // 100}/{i}" for i in range(MANY) if f"r/{i // 100}/{i}" not in seen)
    harness.connected("pub").publish(gone, b"", retain=True)
    sub.publishes()  # the clearing message itself, live [MQTT-3.3.1-10]
    for _ in range(100):
        harness.advance(0.01)
        seen |= {p.topic for p in sub.publishes()}
    assert gone not in seen
    assert len(seen) == MANY - 1


def test_a_feed_ends_with_its_session(harness: Harness) -> None:
    _fill(harness, MANY)
    sub = harness.connected("sub")
    sub.subscribe("#")
    sub.disconnect()
    harness.advance(1.0)  # the armed wake-up finds nothing to do
    assert harness.broker.sessions.get("sub") is None


def test_a_persistent_session_gets_the_rest_of_a_feed_after_reconnecting(
    harness: Harness,
) -> None:
    _fill(harness, MANY)
    sub = harness.connected("sub", clean_start=False)
    sub.subscribe("#", qos=0)
    seen = {p.topic for p in sub.publishes()}
    sub.lose()  # before the feed is through
    harness.advance(1.0)
    back = harness.client(4)
    assert back.connect("sub", clean_start=False).session_present
    for _ in range(100):
        harness.advance(0.01)
        seen |= {p.topic for p in back.publishes()}
    assert len(seen) == MANY


def test_unsubscribing_ends_the_retained_feed(harness: Harness) -> None:
    # [MQTT-3.10.4-2]: no new messages for a subscription once it is gone.
    _fill(harness, MANY)
    sub = harness.connected("sub")
    sub.subscribe("#")
    assert sub.publishes()
    sub.unsubscribe("#")
    harness.advance(1.0)
    assert sub.publishes() == []
