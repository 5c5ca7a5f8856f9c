"""Sessions that outlive their connection: queueing, expiry, limits, restart, commits."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from support.core import DeferredStore, Harness, settings

from mqttd.broker.clock import FakeClock
from mqttd.protocol import (
    Disconnect,
    Properties,
    PubAck,
    PubComp,
    PubRec,
    PubRel,
    ReasonCode,
    Will,
)
from mqttd.store.memory import MemoryStore


def _expiry(seconds: int) -> Properties:
    return Properties(session_expiry_interval=seconds)


def test_offline_persistent_session_keeps_subscriptions_and_queues_qos1(harness: Harness) -> None:
    sub = harness.connected("sub", clean_start=False)
    sub.subscribe("t", qos=1)
    sub.disconnect()
    pub = harness.connected("pub")
    for i in range(3):
        pub.publish("t", bytes([i]), qos=1, packet_id=i + 1)
    assert len(harness.broker.sessions["sub"].queue) == 3
    back = harness.client(4)
    assert back.connect("sub", clean_start=False).session_present
    got = back.publishes()
    assert [(p.payload, p.dup) for p in got] == [
        (b"\x00", False),
        (b"\x01", False),
        (b"\x02", False),
    ]


def test_qos0_messages_are_not_queued_for_an_offline_session(harness: Harness) -> None:
    sub = harness.connected("sub", clean_start=False)
    sub.subscribe("t", qos=1)
    sub.disconnect()
    harness.connected("pub").publish("t", b"zero", qos=0)
    back = harness.connected("sub", clean_start=False)
    assert back.publishes() == []


def test_clean_session_is_discarded_at_disconnect(harness: Harness) -> None:
    sub = harness.connected("sub", clean_start=True)
    sub.subscribe("t", qos=1)
    sub.disconnect()
    assert "sub" not in harness.broker.sessions
    assert harness.store._sessions == {}


def test_clean_start_discards_a_stored_session(harness: Harness) -> None:
    sub = harness.connected("sub", clean_start=False)
    sub.subscribe("t", qos=1)
    sub.disconnect()
    harness.connected("pub").publish("t", qos=1)
    fresh = harness.client(4)
    assert fresh.connect("sub", clean_start=True).session_present is False
    assert fresh.packets() == []
    assert harness.broker.sessions["sub"].subscriptions == {}


def test_persistent_session_is_recorded_in_the_store(harness: Harness) -> None:
    sub = harness.connected("sub", level=5, clean_start=False, properties=_expiry(60))
    sub.subscribe("a/#", qos=2, properties=Properties(subscription_identifier=(4,)))
    stored = harness.store._sessions["sub"]
    assert stored.expiry_interval == 60
    assert stored.subscriptions["a/#"].qos == 2
    assert stored.subscriptions["a/#"].subscription_identifier == 4
    sub.unsubscribe("a/#")
    assert stored.subscriptions == {}


def test_5_session_expires_after_its_interval(harness: Harness) -> None:
    sub = harness.connected("sub", level=5, properties=_expiry(30))
    sub.subscribe("t", qos=1)
    sub.disconnect()
    harness.connected("early").publish("t", b"lost with the session", qos=1)
    assert len(harness.broker.sessions["sub"].queue) == 1
    harness.advance(29)
    assert "sub" in harness.broker.sessions
    harness.advance(2)
    assert "sub" not in harness.broker.sessions
    assert harness.store._sessions == {}
    assert harness.broker.stats.sessions_expired == 1
    # Its subscription is gone from the tree too.
    harness.connected("pub").publish("t", qos=1)
    back = harness.client(5)
    assert back.connect("sub", clean_start=False).session_present is False
    assert back.packets() == []  # the queued message went with the session


def test_5_session_expiry_0xffffffff_never_expires(harness: Harness) -> None:
    sub = harness.connected("sub", level=5, properties=_expiry(0xFFFFFFFF))
    sub.disconnect()
    harness.advance(10 * 365 * 86400)
    assert "sub" in harness.broker.sessions


def test_5_reconnect_before_expiry_keeps_the_session(harness: Harness) -> None:
    sub = harness.connected("sub", level=5, properties=_expiry(30))
    sub.subscribe("t", qos=1)
    sub.lose()
    harness.advance(20)
    back = harness.client(5)
    assert back.connect("sub", clean_start=False, properties=_expiry(30)).session_present
    harness.advance(100)
    assert harness.broker.sessions["sub"].connection is back.conn


def test_5_disconnect_may_change_the_session_expiry(harness: Harness) -> None:
    sub = harness.connected("sub", level=5, properties=_expiry(30))
    sub.disconnect(properties=_expiry(0))
    assert "sub" not in harness.broker.sessions


def test_5_disconnect_cannot_raise_expiry_from_zero(harness: Harness) -> None:
    sub = harness.connected("sub", level=5)
    sub.disconnect(properties=_expiry(100))
    assert sub.expect(Disconnect).reason_code == ReasonCode.PROTOCOL_ERROR
    assert sub.closed
    assert "sub" not in harness.broker.sessions


def test_queue_limit_drops_new_messages_by_default(make_harness: Any) -> None:
    harness = make_harness(max_queued_messages=2)
    sub = harness.connected("sub", clean_start=False)
    sub.subscribe("t", qos=1)
    sub.lose()
    pub = harness.connected("pub")
    for i in range(4):
        pub.publish("t", bytes([i]), qos=1, packet_id=i + 1)
    assert harness.broker.stats.messages_dropped == 2
    back = harness.connected("sub", clean_start=False)
    assert [p.payload for p in back.publishes()] == [b"\x00", b"\x01"]


def test_queue_limit_drop_oldest_keeps_the_newest(make_harness: Any) -> None:
    harness = make_harness(max_queued_messages=2, queue_overflow="drop_oldest")
    sub = harness.connected("sub", clean_start=False)
    sub.subscribe("t", qos=1)
    sub.lose()
    pub = harness.connected("pub")
    for i in range(4):
        pub.publish("t", bytes([i]), qos=1, packet_id=i + 1)
    assert harness.broker.stats.messages_dropped == 2
    # The evicted messages are gone from the store as well.
    assert len(harness.store._sessions["sub"].outbound) == 2
    back = harness.connected("sub", clean_start=False)
    assert [p.payload for p in back.publishes()] == [b"\x02", b"\x03"]


def test_queue_byte_limit(make_harness: Any) -> None:
    harness = make_harness(max_queued_messages=0, max_queued_bytes=10)
    sub = harness.connected("sub", clean_start=False)
    sub.subscribe("t", qos=1)
    sub.lose()
    pub = harness.connected("pub")
    for i in range(4):
        pub.publish("t", b"abcd", qos=1, packet_id=i + 1)
    assert harness.broker.stats.messages_dropped == 2
    assert harness.broker.sessions["sub"].queued_bytes == 8


def test_queued_and_inflight_messages_are_recorded_and_removed_on_ack(harness: Harness) -> None:
    sub = harness.connected("sub", clean_start=False)
    sub.subscribe("t", qos=2)
    harness.connected("pub").publish("t", b"m", qos=2)
    stored = harness.store._sessions["sub"]
    (entry,) = stored.outbound.values()
    assert entry.packet_id == 1 and entry.state == 1
    assert len(sub.publishes()) == 1
    sub.send(PubRec(1))
    sub.expect(PubRel)
    assert entry.state == 2
    sub.send(PubComp(1))
    assert stored.outbound == {}
    assert harness.store._messages == {}


def test_puback_waits_for_the_store_commit_when_a_persistent_session_matched() -> None:
    store = DeferredStore()
    harness = Harness(store=store)
    sub = harness.connected("sub", clean_start=False)
    sub.subscribe("t", qos=1)
    volatile = harness.connected("volatile")
    volatile.subscribe("other", qos=1)
    pub = harness.connected("pub")
    pub.publish("other", qos=1, packet_id=1)  # only a clean session: ack at once
    assert pub.expect(PubAck) == PubAck(1)
    pub.publish("t", qos=1, packet_id=2)  # a persistent session: ack after commit
    pub.publish("other", qos=1, packet_id=3)  # must not overtake the one before
    assert pub.packets() == []
    store.commit()
    assert pub.packets() == [PubAck(2), PubAck(3)]


def test_pubrec_waits_for_the_commit_of_the_inbound_qos2_id() -> None:
    store = DeferredStore()
    harness = Harness(store=store)
    pub = harness.connected("pub", clean_start=False)
    pub.publish("t", qos=2, packet_id=5)
    assert pub.packets() == []
    store.commit()
    assert pub.packets() == [PubRec(5)]
    assert store._sessions["pub"].inbound_qos2 == {5}


def test_retained_publish_ack_waits_for_the_commit() -> None:
    store = DeferredStore()
    harness = Harness(store=store)
    pub = harness.connected("pub")
    pub.publish("t", qos=1, retain=True, packet_id=1)
    assert pub.packets() == []
    store.commit()
    assert pub.packets() == [PubAck(1)]


async def test_restart_restores_retained_sessions_queues_and_inflight() -> None:
    store = MemoryStore()
    clock = FakeClock()
    first = Harness(store=store, clock=clock)
    await first.broker.start()
    sub = first.connected("sub", clean_start=False)
    sub.subscribe("t", qos=1)
    pub = first.connected("pub", clean_start=False)
    pub.publish("keep", b"r", qos=1, retain=True, packet_id=1)
    pub.publish("t", b"inflight", qos=1, packet_id=2)
    pub.publish("t", b"q2", qos=2, packet_id=3)  # awaits PUBREL
    (inflight,) = sub.publishes()[:1]
    sub.lose()
    pub.publish("t", b"queued", qos=1, packet_id=4)
    await first.broker.stop()

    second = Harness(store=store, clock=clock)
    await second.broker.start()
    assert second.broker.retained.get("keep") is not None
    back = second.client(4)
    assert back.connect("sub", clean_start=False).session_present
    got = back.publishes()
    assert [(p.payload, p.dup) for p in got] == [
        (b"inflight", True),
        (b"q2", True),
        (b"queued", False),
    ]
    assert got[0].packet_id == inflight.packet_id
    # The publisher's QoS 2 id survived too: its resend is not routed again.
    pub2 = second.connected("pub", clean_start=False)
    pub2.publish("t", b"q2", qos=2, packet_id=3, dup=True)
    assert pub2.expect(PubRec) == PubRec(3)
    assert back.publishes() == []


async def test_restored_queues_are_light_lists_until_used_and_keep_their_order() -> None:
    store = MemoryStore()
    clock = FakeClock()
    first = Harness(store=store, clock=clock)
    await first.broker.start()
    for client_id in ("a", "b"):
        sub = first.connected(client_id, clean_start=False)
        sub.subscribe("t", qos=1)
        sub.subscribe(f"to/{client_id}", qos=1)
        sub.lose()
    pub = first.connected("pub")
    pub.publish("t", b"1", qos=1, packet_id=1)
    pub.publish("t", b"2", qos=1, packet_id=2)
    await first.broker.stop()

    second = Harness(store=store, clock=clock)
    await second.broker.start()
    sessions = second.broker.sessions
    # A list of two entries, not a 760-byte deque (docs/benchmarks.md, start-up).
    assert [type(sessions[c]._queue) for c in ("a", "b")] == [list, list]
    assert sessions["a"].queue_length == 2
    # "a" is queued to while offline: the new message goes after the restored ones.
    second.connected("pub").publish("to/a", b"3", qos=1, packet_id=1)
    assert type(sessions["b"]._queue) is list  # "b" is sent its list when it is back
    for client_id, expected in (("a", [b"1", b"2", b"3"]), ("b", [b"1", b"2"])):
        back = second.client(4)
        assert back.connect(client_id, clean_start=False).session_present
        assert [p.payload for p in back.publishes()] == expected
        assert sessions[client_id].queue_length == 0


async def test_start_loads_with_the_garbage_collector_off_and_turns_it_back_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = MemoryStore()
    first = Harness(store=store)
    pub = first.connected("pub", clean_start=False)
    pub.publish("keep", b"r", qos=1, retain=True, packet_id=1)
    await first.broker.stop()
    seen: list[bool] = []
    load = MemoryStore.retained_rows

    def watched(self: MemoryStore, chunk: int = 20_000):  # type: ignore[no-untyped-def]
        seen.append(gc.isenabled())
        return load(self, chunk)

    monkeypatch.setattr(MemoryStore, "retained_rows", watched)
    assert gc.isenabled()
    await Harness(store=store).broker.start()
    assert seen == [False] and gc.isenabled()
    # Off before start (an application's choice): it stays off.
    gc.disable()
    try:
        await Harness(store=store).broker.start()
        assert not gc.isenabled()
    finally:
        gc.enable()


async def test_start_leaves_what_it_loaded_in_the_oldest_generation() -> None:
    # The first collections after start must not walk everything loaded (a million
    # retained messages): it goes to the oldest generation at once.
    store = MemoryStore()
    first = Harness(store=store)
    sub = first.connected("sub", clean_start=False)
    sub.subscribe("t", qos=1)
    await first.broker.stop()
    second = Harness(store=store)
    await second.broker.start()
    session = second.broker.sessions["sub"]
    assert gc.is_tracked(session)
    assert any(o is session for o in gc.get_objects(generation=2))
    assert not gc.get_freeze_count()  # moved, not frozen: cycles among them still collect


async def test_restart_expires_sessions_whose_time_ran_out() -> None:
    store = MemoryStore()
    clock = FakeClock()
    first = Harness(settings(), store=store, clock=clock)
    await first.broker.start()
    sub = first.connected("sub", level=5, properties=_expiry(60))
    sub.subscribe("t")
    sub.disconnect()
    await first.broker.stop()
    clock.advance(100)
    second = Harness(store=store, clock=clock)
    await second.broker.start()
    assert "sub" not in second.broker.sessions
    assert store._sessions == {}


async def test_restart_counts_session_expiry_from_the_recorded_disconnect() -> None:
    store = MemoryStore()
    clock = FakeClock()
    first = Harness(store=store, clock=clock)
    await first.broker.start()
    sub = first.connected("sub", level=5, properties=_expiry(60))
    sub.disconnect()
    await first.broker.stop()
    clock.advance(40)
    second = Harness(store=store, clock=clock)
    await second.broker.start()
    assert "sub" in second.broker.sessions
    second.advance(21)
    assert "sub" not in second.broker.sessions


async def test_restart_restores_a_pending_will() -> None:
    store = MemoryStore()
    clock = FakeClock()
    first = Harness(store=store, clock=clock)
    await first.broker.start()
    will = Will("will/c", b"late", properties=Properties(will_delay_interval=30))
    client = first.connected("c", level=5, will=will, properties=_expiry(300))
    client.lose()
    await first.broker.stop()
    second = Harness(store=store, clock=clock)
    await second.broker.start()
    watcher = second.connected("w")
    watcher.subscribe("will/#")
    second.advance(31)
    assert [p.payload for p in watcher.publishes()] == [b"late"]


# -- exactly once across a crash: what waits for the commit --------------------------------


def test_qos2_publish_to_a_persistent_session_waits_for_its_commit_and_keeps_order() -> None:
    store = DeferredStore()
    harness = Harness(store=store)
    sub = harness.connected("sub", clean_start=False)
    store.commit()
    sub.packets()
    sub.subscribe("two", qos=2)
    sub.subscribe("one", qos=1, packet_id=2)
    pub = harness.connected("pub")
    pub.publish("two", b"first", qos=2, packet_id=1)
    pub.publish("one", b"second", qos=1, packet_id=2)
    # Nothing reaches the subscriber before its packet ids are stored, and the QoS 1
    # message does not overtake the QoS 2 one waiting for the commit.
    assert sub.publishes() == []
    store.commit()
    assert [p.payload for p in sub.publishes()] == [b"first", b"second"]


def test_pubrel_and_pubcomp_wait_for_the_commit_of_the_state_they_announce() -> None:
    store = DeferredStore()
    harness = Harness(store=store)
    sub = harness.connected("sub", clean_start=False)
    sub.subscribe("t", qos=2)
    pub = harness.connected("pub", clean_start=False)
    store.commit()
    pub.packets()
    pub.publish("t", b"m", qos=2, packet_id=7)
    store.commit()
    assert pub.expect(PubRec).packet_id == 7
    (delivered,) = sub.publishes()
    assert delivered.packet_id is not None
    # Outbound: PUBREL only once PUBREL_SENT is stored, else a crash resends the PUBLISH.
    sub.send(PubRec(delivered.packet_id))
    assert sub.packets() == []
    store.commit()
    assert sub.expect(PubRel).packet_id == delivered.packet_id
    # Inbound: PUBCOMP only once the packet id is forgotten, else a crash swallows the
    # publisher's next message under the same id as a duplicate.
    pub.send(PubRel(7))
    assert pub.packets() == []
    store.commit()
    assert pub.expect(PubComp).packet_id == 7


def test_each_retained_delivery_to_a_persistent_session_is_stored_on_its_own(
    harness: Harness,
) -> None:
    harness.connected("pub").publish("r", b"kept", qos=1, retain=True, packet_id=1)
    sub = harness.connected("sub", clean_start=False)
    sub.subscribe("r", qos=1)
    (first,) = sub.publishes()
    sub.ack(first)  # the store forgets that delivery's message
    sub.unsubscribe("r")
    sub.subscribe("r", qos=1, packet_id=3)
    (again,) = sub.publishes()
    assert again.retain and again.payload == b"kept"
    # Unacknowledged, so it must be in the store to survive a restart.
    outbound = harness.store._sessions["sub"].outbound
    assert len(outbound) == 1
