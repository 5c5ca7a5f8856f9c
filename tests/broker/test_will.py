"""Wills: when they are published, when not, and the 5.0 Will Delay Interval."""

from __future__ import annotations

from support.core import Client, Harness

from mqttd.protocol import Disconnect, Properties, ReasonCode, Will


def _watch(harness: Harness, topic: str = "will/#") -> Client:
    watcher = harness.connected("watcher", level=5)
    watcher.subscribe(topic, qos=2)
    return watcher


def test_will_is_published_when_the_socket_closes_without_disconnect(harness: Harness) -> None:
    watcher = _watch(harness)
    client = harness.connected("c", will=Will("will/c", b"gone"))
    client.lose()
    assert [(p.topic, p.payload) for p in watcher.publishes()] == [("will/c", b"gone")]
    assert harness.broker.stats.wills_published == 1


def test_will_is_not_published_after_a_normal_disconnect(harness: Harness) -> None:
    watcher = _watch(harness)
    client = harness.connected("c", will=Will("will/c", b"gone"))
    client.disconnect()
    client.lose()
    assert watcher.publishes() == []


def test_will_qos_and_retain_are_honoured(harness: Harness) -> None:
    watcher = _watch(harness)
    client = harness.connected("c", will=Will("will/c", b"gone", qos=1, retain=True))
    client.lose()
    (p,) = watcher.publishes()
    assert p.qos == 1
    assert harness.broker.retained.get("will/c") is not None
    late = harness.connected("late")
    late.subscribe("will/c", qos=1)
    (r,) = late.publishes()
    assert r.retain and r.payload == b"gone"


def test_5_disconnect_with_0x04_publishes_the_will(harness: Harness) -> None:
    watcher = _watch(harness)
    client = harness.connected("c", level=5, will=Will("will/c", b"asked"))
    client.disconnect(ReasonCode.DISCONNECT_WITH_WILL_MESSAGE)
    assert [p.payload for p in watcher.publishes()] == [b"asked"]


def test_will_is_published_after_a_protocol_error(harness: Harness) -> None:
    watcher = _watch(harness)
    client = harness.connected("c", level=5, will=Will("will/c", b"broken"))
    client.send_raw_publish("bad/#")
    assert client.expect(Disconnect).reason_code == ReasonCode.TOPIC_NAME_INVALID
    assert [p.payload for p in watcher.publishes()] == [b"broken"]


def test_will_is_published_after_a_keepalive_timeout(harness: Harness) -> None:
    watcher = _watch(harness)
    harness.connected("c", keep_alive=2, will=Will("will/c", b"silent"))
    harness.advance(3.1)
    assert [p.payload for p in watcher.publishes()] == [b"silent"]


def test_5_will_properties_are_passed_on_without_the_delay(harness: Harness) -> None:
    watcher = _watch(harness)
    props = Properties(content_type="text/plain", user_property=(("k", "v"),))
    client = harness.connected("c", level=5, will=Will("will/c", b"x", properties=props))
    client.lose()
    (p,) = watcher.publishes()
    assert p.properties == props


def test_5_will_delay_publishes_after_the_delay(harness: Harness) -> None:
    watcher = _watch(harness)
    will = Will("will/c", b"late", properties=Properties(will_delay_interval=10))
    client = harness.connected(
        "c", level=5, will=will, properties=Properties(session_expiry_interval=100)
    )
    client.lose()
    harness.advance(9)
    assert watcher.publishes() == []
    harness.advance(1.5)
    assert [p.payload for p in watcher.publishes()] == [b"late"]


def test_5_will_delay_is_cancelled_when_the_client_reconnects_in_time(harness: Harness) -> None:
    watcher = _watch(harness)
    will = Will("will/c", b"late", properties=Properties(will_delay_interval=10))
    expiry = Properties(session_expiry_interval=100)
    client = harness.connected("c", level=5, will=will, properties=expiry, clean_start=False)
    client.lose()
    harness.advance(5)
    harness.connected("c", level=5, properties=expiry, clean_start=False)
    harness.advance(20)
    assert watcher.publishes() == []


def test_5_will_goes_out_when_the_session_ends_before_the_delay(harness: Harness) -> None:
    watcher = _watch(harness)
    will = Will("will/c", b"ended", properties=Properties(will_delay_interval=60))
    client = harness.connected(
        "c", level=5, will=will, properties=Properties(session_expiry_interval=10)
    )
    client.lose()
    harness.advance(9)
    assert watcher.publishes() == []
    harness.advance(1.5)
    assert [p.payload for p in watcher.publishes()] == [b"ended"]
    assert "c" not in harness.broker.sessions


def test_5_will_delay_without_session_expiry_publishes_at_once(harness: Harness) -> None:
    watcher = _watch(harness)
    will = Will("will/c", b"now", properties=Properties(will_delay_interval=60))
    client = harness.connected("c", level=5, will=will)
    client.lose()
    assert [p.payload for p in watcher.publishes()] == [b"now"]


def test_pending_will_is_recorded_for_a_persistent_session(harness: Harness) -> None:
    will = Will("will/c", b"late", properties=Properties(will_delay_interval=10))
    client = harness.connected(
        "c", level=5, will=will, properties=Properties(session_expiry_interval=100)
    )
    client.lose()
    stored = harness.store._sessions["c"].will
    assert stored is not None and stored.message.payload == b"late"
    harness.advance(11)
    assert harness.store._sessions["c"].will is None


def test_will_message_expiry_counts_from_publication(harness: Harness) -> None:
    watcher = harness.connected(
        "watcher", level=5, clean_start=False, properties=Properties(session_expiry_interval=1000)
    )
    watcher.subscribe("will/#", qos=1)
    watcher.lose()
    will = Will("will/c", b"x", qos=1, properties=Properties(message_expiry_interval=30))
    client = harness.connected("c", level=5, will=will)
    harness.advance(100)
    client.lose()
    harness.advance(10)
    back = harness.connected(
        "watcher", level=5, clean_start=False, properties=Properties(session_expiry_interval=1000)
    )
    (p,) = back.publishes()
    assert p.properties is not None and p.properties.message_expiry_interval == 20
