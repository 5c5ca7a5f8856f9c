"""Dead letters end to end: paho-mqtt clients over real sockets against the running App.

Each test makes the broker drop messages for one reason, collects the dead letters with
an ordinary `$dead/#` subscription and checks topic, payload, QoS, user properties and
the counters. The App runs on a FakeClock, so expiry is reached without sleeping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .conftest import LiveFactory, PahoFactory

pytestmark = pytest.mark.timeout(60)

ON = {"dead_letter": {"enabled": True}}
# FakeClock's wall clock starts at 1_700_000_000.
START_TIME = "2023-11-14T22:13:20.000Z"


def config(**sections: dict[str, Any]) -> dict[str, Any]:
    return {**ON, **sections}


def test_a_slow_subscriber_overflowing_its_queue(live: LiveFactory, paho: PahoFactory) -> None:
    # Back-pressure (flow.py) first pauses the publisher; once the subscriber has drained
    # nothing for max_publisher_pause, its queue falls back to dropping: those drops.
    broker = live(config(limits={"max_queued_messages": 2, "max_publisher_pause": 5.0}))
    dlq = paho(broker, "dlq")
    dlq.subscribe("$dead/#", 1)
    slow = paho(broker, "slow", receive_maximum=1)
    slow.subscribe("plant/#", 1)
    pub = paho(broker, "sensor-7")
    with slow.hold():
        # m0 waits in slow's on_message (no PUBACK), m1 and m2 fill its queue.
        for i in range(3):
            pub.publish(f"plant/m{i}", f"reading {i}".encode(), qos=1)
        broker.advance(5.0)  # slow drained nothing: its queue now obeys its bound
        for i in range(3, 6):
            pub.publish(f"plant/m{i}", f"reading {i}".encode(), qos=1)
        letters = dlq.expect(3)
    assert [(m.topic, m.payload, m.qos, m.retain) for m in letters] == [
        (f"$dead/queue_full/plant/m{i}", f"reading {i}".encode(), 1, False) for i in (3, 4, 5)
    ]
    assert letters[0].user_properties == [
        ("reason", "queue_full"),
        ("original-topic", "plant/m3"),
        ("publisher", "sensor-7"),
        ("receiver", "slow"),
        ("time", "2023-11-14T22:13:25.000Z"),
    ]
    assert [m.payload for m in slow.expect(3)] == [b"reading 0", b"reading 1", b"reading 2"]
    stats = broker.stats()
    assert (stats.messages_dropped, stats.dead_letters_published) == (3, 3)
    dlq.expect_none()


def test_a_message_expiring_while_its_subscriber_is_offline(
    live: LiveFactory, paho: PahoFactory
) -> None:
    broker = live(ON)
    sleeper = paho(broker, "sleeper", clean=False, session_expiry=3600)
    sleeper.subscribe("meter/#", 1)
    sleeper.disconnect()
    dlq = paho(broker, "dlq")
    dlq.subscribe("$dead/#", 1)
    pub = paho(broker, "meter-1")
    pub.publish("meter/1", b"42 kWh", qos=1, expiry=10)
    pub.publish("meter/2", b"still fresh", qos=1)
    broker.advance(11)
    again = paho(broker, "sleeper", clean=False, session_expiry=3600)
    [fresh] = again.expect(1)
    assert fresh.payload == b"still fresh"
    [letter] = dlq.expect(1)
    assert (letter.topic, letter.payload, letter.qos) == ("$dead/expired/meter/1", b"42 kWh", 1)
    assert letter.expiry is None  # the dead letter does not expire in turn
    assert letter.user == {
        "reason": "expired",
        "original-topic": "meter/1",
        "publisher": "meter-1",
        "receiver": "sleeper",
        "time": "2023-11-14T22:13:31.000Z",
    }
    assert broker.stats().messages_expired == 1
    again.expect_none()


def test_a_message_too_large_for_a_v5_client(live: LiveFactory, paho: PahoFactory) -> None:
    broker = live(ON)
    tiny = paho(broker, "tiny", maximum_packet_size=128)
    tiny.subscribe("big/#", 1)
    dlq = paho(broker, "dlq")
    dlq.subscribe("$dead/#", 1)
    pub = paho(broker, "camera")
    pub.publish("big/frame", b"f" * 1000, qos=1)
    pub.publish("big/ok", b"small", qos=1)
    assert [m.payload for m in tiny.expect(1)] == [b"small"]
    [letter] = dlq.expect(1)
    assert (letter.topic, letter.payload, letter.qos) == (
        "$dead/too_large/big/frame",
        b"f" * 1000,
        1,
    )
    assert letter.user["receiver"] == "tiny" and letter.user["publisher"] == "camera"
    assert broker.stats().messages_too_large == 1


def test_a_publish_refused_by_the_acl(live: LiveFactory, paho: PahoFactory, tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite plant/#\ntopic read $dead/#\n")
    broker = live(config(auth={"acl_file": str(acl)}))
    dlq = paho(broker, "dlq")
    assert dlq.subscribe("$dead/#", 1) == [1]
    pub = paho(broker, "intruder")
    assert pub.publish("secret/plans", b"blueprint", qos=1) == 0x87  # Not authorized
    [letter] = dlq.expect(1)
    assert (letter.topic, letter.payload) == ("$dead/not_authorised/secret/plans", b"blueprint")
    assert letter.user["publisher"] == "intruder" and "receiver" not in letter.user
    assert broker.stats().messages_not_authorised == 1


def test_a_retained_message_that_expired(live: LiveFactory, paho: PahoFactory) -> None:
    broker = live(ON)
    dlq = paho(broker, "dlq")
    dlq.subscribe("$dead/#", 1)
    paho(broker, "config-tool").publish("cfg/a", b"v1", qos=1, retain=True, expiry=5)
    broker.advance(6)
    reader = paho(broker, "reader")
    reader.subscribe("cfg/#", 1)
    [letter] = dlq.expect(1)
    assert (letter.topic, letter.payload, letter.retain) == (
        "$dead/retained_expired/cfg/a",
        b"v1",
        False,
    )
    assert letter.user["reason"] == "retained_expired"
    assert broker.stats().retained_expired == 1
    reader.expect_none()


def test_messages_queued_in_a_session_that_expired(live: LiveFactory, paho: PahoFactory) -> None:
    broker = live(ON)
    worker = paho(broker, "worker", clean=False, session_expiry=10)
    worker.subscribe("job/#", 1)
    worker.disconnect()
    dlq = paho(broker, "dlq")
    dlq.subscribe("$dead/#", 1)
    pub = paho(broker, "dispatcher")
    pub.publish("job/1", b"one", qos=1)
    pub.publish("job/2", b"two", qos=2)
    broker.advance(10)
    letters = dlq.expect(2)
    assert [(m.topic, m.payload, m.qos) for m in letters] == [
        ("$dead/session_expired/job/1", b"one", 1),
        ("$dead/session_expired/job/2", b"two", 1),  # granted 1 to dlq, original QoS 2
    ]
    assert {m.user["receiver"] for m in letters} == {"worker"}
    stats = broker.stats()
    assert (stats.session_messages_expired, stats.sessions_expired) == (2, 1)


def test_a_3_1_1_collector_reads_the_reason_from_the_topic(
    live: LiveFactory, paho: PahoFactory
) -> None:
    broker = live(ON)
    tiny = paho(broker, "tiny", maximum_packet_size=64)
    tiny.subscribe("big", 0)
    old = paho(broker, "old", v5=False)
    old.subscribe("$dead/#", 0)
    everything = paho(broker, "everything", v5=False)
    everything.subscribe("#", 0)  # [MQTT-4.7.2-1]: "#" never matches "$dead/..."
    paho(broker, "pub").publish("big", b"x" * 100)
    [letter] = old.expect(1)
    assert (letter.topic, letter.user_properties) == ("$dead/too_large/big", [])
    assert [m.topic for m in everything.expect(1)] == ["big"]
    everything.expect_none()


def test_the_path_cannot_loop(live: LiveFactory, paho: PahoFactory) -> None:
    # The dead-letter collector is offline with the same tiny queue as the victim.
    broker = live(config(limits={"max_queued_messages": 2}))
    for client_id, topic_filter in (("victim", "flood/#"), ("dlq", "$dead/#")):
        client = paho(broker, client_id, clean=False, session_expiry=3600)
        client.subscribe(topic_filter, 1)
        client.disconnect()
    watch = paho(broker, "watch")
    watch.subscribe("$dead/#", 0)
    pub = paho(broker, "pub")
    for i in range(6):
        pub.publish("flood/x", f"{i}".encode(), qos=1)
    seen = watch.expect(4)
    assert {m.topic for m in seen} == {"$dead/queue_full/flood/x"}
    watch.expect_none()  # no "$dead/queue_full/$dead/..." ever
    stats = broker.stats()
    # 4 dropped for the victim; 2 of their 4 dead letters dropped for the collector.
    assert (stats.messages_dropped, stats.dead_letters_published) == (6, 4)
    dlq = paho(broker, "dlq", clean=False, session_expiry=3600)
    assert [m.payload for m in dlq.expect(2)] == [b"2", b"3"]


def test_the_rate_limit_holds(live: LiveFactory, paho: PahoFactory) -> None:
    broker = live({"dead_letter": {"enabled": True, "max_rate": 1.0, "burst": 5}})
    tiny = paho(broker, "tiny", maximum_packet_size=64)
    tiny.subscribe("big", 0)
    watch = paho(broker, "watch")
    watch.subscribe("$dead/#", 0)
    pub = paho(broker, "pub")
    for _ in range(50):
        pub.publish("big", b"x" * 100)
    pub.publish("fence", b"", qos=1)  # its PUBACK: the 50 before it are routed
    assert len(watch.expect(5)) == 5
    watch.expect_none()
    stats = broker.stats()
    assert (stats.messages_too_large, stats.dead_letters_published) == (50, 5)
    assert stats.dead_letters_suppressed == 45


def test_off_by_default_but_every_drop_is_counted(live: LiveFactory, paho: PahoFactory) -> None:
    broker = live({"limits": {"max_queued_messages": 1}})
    offline = paho(broker, "offline", clean=False, session_expiry=3600)
    offline.subscribe("t", 1)
    offline.disconnect()
    watch = paho(broker, "watch")
    watch.subscribe("$dead/#", 0)
    pub = paho(broker, "pub")
    for _ in range(3):
        pub.publish("t", b"x", qos=1)
    pub.publish("nobody/listens", b"x", qos=1)
    watch.expect_none()
    stats = broker.stats()
    assert (stats.messages_dropped, stats.messages_no_subscribers) == (2, 1)
    assert stats.dead_letters_published == 0
