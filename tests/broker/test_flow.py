"""Backpressure and graceful stop."""

from __future__ import annotations

from typing import Any

from support.core import Harness

from mqttd.protocol import Disconnect, ReasonCode


def test_unwritable_sink_queues_messages_until_it_drains(harness: Harness) -> None:
    sub = harness.connected("sub")
    sub.subscribe("t", qos=1)
    sub.conn.writable_changed(False)
    pub = harness.connected("pub")
    pub.publish("t", b"a", qos=0)
    pub.publish("t", b"b", qos=1)
    assert sub.packets() == []
    assert len(harness.broker.sessions["sub"].queue) == 2
    sub.conn.writable_changed(True)
    assert [(p.payload, p.qos) for p in sub.publishes()] == [(b"a", 0), (b"b", 1)]


def test_qos0_is_dropped_and_counted_when_an_unwritable_queue_is_full(make_harness: Any) -> None:
    harness = make_harness(max_queued_messages=3)
    sub = harness.connected("sub")
    sub.subscribe("t")
    sub.conn.writable_changed(False)
    pub = harness.connected("pub")
    for i in range(10):
        pub.publish("t", bytes([i]))
    assert harness.broker.stats.messages_dropped == 7
    sub.conn.writable_changed(True)
    assert [p.payload for p in sub.publishes()] == [b"\x00", b"\x01", b"\x02"]


def test_queued_qos0_is_forgotten_when_the_connection_ends(harness: Harness) -> None:
    sub = harness.connected("sub", clean_start=False)
    sub.subscribe("t", qos=1)
    sub.conn.writable_changed(False)
    pub = harness.connected("pub")
    pub.publish("t", b"zero", qos=0)
    pub.publish("t", b"one", qos=1)
    sub.lose()
    back = harness.connected("sub", clean_start=False)
    assert [p.payload for p in back.publishes()] == [b"one"]


async def test_stop_sends_0x8b_to_5_clients_and_closes_everyone(harness: Harness) -> None:
    await harness.broker.start()
    v5 = harness.connected("v5", level=5)
    v4 = harness.connected("v4", level=4)
    waiting = harness.client(4)
    await harness.broker.stop()
    assert v5.expect(Disconnect).reason_code == ReasonCode.SERVER_SHUTTING_DOWN
    assert v4.packets() == []
    assert v5.closed and v4.closed and waiting.closed
    assert harness.broker.stats.clients_connected == 0


async def test_stop_does_not_publish_wills(harness: Harness) -> None:
    from mqttd.protocol import Will

    await harness.broker.start()
    watcher = harness.connected("w", clean_start=False)
    watcher.subscribe("will", qos=1)
    harness.connected("c", will=Will("will", b"x", qos=1))
    await harness.broker.stop()
    assert watcher.publishes() == []
    assert harness.store._sessions["w"].outbound == {}


def test_no_writes_after_close(harness: Harness) -> None:
    sub = harness.connected("sub", level=5)
    sub.subscribe("t")
    sub.lose()
    harness.connected("pub").publish("t")
    assert sub.sink.writes_after_close == 0


def test_refresh_gauges_counts_sessions_subscriptions_and_messages(make_harness: Any) -> None:
    harness = make_harness(max_inflight_messages=1)
    sub = harness.connected("sub", clean_start=False)
    sub.subscribe("a", "b", qos=1)
    pub = harness.connected("pub")
    pub.publish("a", qos=1, retain=True)
    pub.publish("a", qos=1, packet_id=2)
    stats = harness.broker.refresh_gauges()
    assert (stats.sessions, stats.subscriptions, stats.retained_messages) == (2, 2, 1)
    assert (stats.messages_inflight, stats.messages_queued) == (1, 1)
    assert stats.clients_connected == 2
