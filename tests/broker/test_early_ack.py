"""A QoS 1 publisher's PUBACK goes once the store committed the message or once every
persistent receiver acknowledged it, whichever comes first (outbound.PublisherAck)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from support.core import Client, DeferredStore, Harness, settings

from mqttd.broker.outbound import PublisherAck
from mqttd.protocol import PubAck, Publish
from mqttd.protocol.reason_codes import ReasonCode


def _persistent_subscriber(harness: Harness, client_id: str, topic: str = "t") -> Client:
    sub = harness.connected(client_id, clean_start=False)
    sub.subscribe(topic, qos=1)
    return sub


def _delivered(sub: Client) -> Publish:
    [publish] = sub.publishes()
    return publish


def test_puback_goes_before_the_commit_once_the_persistent_receiver_acked() -> None:
    store = DeferredStore()
    harness = Harness(store=store)
    sub = _persistent_subscriber(harness, "sub")
    pub = harness.connected("pub")
    pub.publish("t", qos=1, packet_id=1)
    assert pub.packets() == []  # recorded for "sub": not yet
    assert store.patient == [True]  # the store may let the batch fill
    sub.ack(_delivered(sub))
    assert pub.packets() == [PubAck(1)]  # no commit happened
    store.commit()
    assert pub.packets() == []  # the commit does not send it twice
    assert pub.conn.qos1_unacked == 0


def test_puback_waits_for_every_persistent_receiver() -> None:
    store = DeferredStore()
    harness = Harness(store=store)
    first = _persistent_subscriber(harness, "first")
    second = _persistent_subscriber(harness, "second")
    pub = harness.connected("pub")
    pub.publish("t", qos=1, packet_id=1)
    first.ack(_delivered(first))
    assert pub.packets() == []
    second.ack(_delivered(second))
    assert pub.packets() == [PubAck(1)]


def test_a_queued_delivery_holds_the_puback_until_its_receiver_acks() -> None:
    store = DeferredStore()
    harness = Harness(settings=settings(max_inflight_messages=1), store=store)
    sub = _persistent_subscriber(harness, "sub")
    pub = harness.connected("pub")
    pub.publish("t", b"1", qos=1, packet_id=1)
    pub.publish("t", b"2", qos=1, packet_id=2)  # queued behind the window of 1
    assert pub.packets() == []
    sub.ack(_delivered(sub))
    assert pub.packets() == [PubAck(1)]
    second = _delivered(sub)
    assert second.payload == b"2"
    sub.ack(second)
    assert pub.packets() == [PubAck(2)]


def test_an_offline_persistent_receiver_leaves_the_puback_to_the_commit() -> None:
    store = DeferredStore()
    harness = Harness(store=store)
    online = _persistent_subscriber(harness, "online")
    _persistent_subscriber(harness, "offline").disconnect()
    store.commit()
    pub = harness.connected("pub")
    pub.publish("t", qos=1, packet_id=1)
    online.ack(_delivered(online))
    assert pub.packets() == []  # "offline" has it only in the store
    # No hold: the queued entry keeps no reference to the publisher's connection.
    assert harness.broker.sessions["offline"].queue[0].ack is None
    store.commit()
    assert pub.packets() == [PubAck(1)]


def test_a_retained_message_leaves_the_puback_to_the_commit() -> None:
    store = DeferredStore()
    harness = Harness(store=store)
    sub = _persistent_subscriber(harness, "sub")
    pub = harness.connected("pub")
    pub.publish("t", qos=1, retain=True, packet_id=1)
    sub.ack(_delivered(sub))
    assert pub.packets() == []  # the retained message stays in the store
    assert store.patient == [False]
    store.commit()
    assert pub.packets() == [PubAck(1)]


def test_a_qos2_delivery_leaves_the_puback_to_the_commit() -> None:
    store = DeferredStore()
    harness = Harness(settings=settings(upgrade_outgoing_qos=True), store=store)
    sub = harness.connected("sub", clean_start=False)
    sub.subscribe("t", qos=2)
    pub = harness.connected("pub")
    pub.publish("t", qos=1, packet_id=1)
    assert store.patient[-1] is False
    store.commit()  # the QoS 2 PUBLISH itself waits for the commit
    assert pub.packets() == [PubAck(1)]


def test_pubacks_keep_the_order_of_the_publishes() -> None:
    store = DeferredStore()
    harness = Harness(store=store)
    a = _persistent_subscriber(harness, "a", "ta")
    b = _persistent_subscriber(harness, "b", "tb")
    pub = harness.connected("pub")
    pub.publish("ta", qos=1, packet_id=1)
    pub.publish("tb", qos=1, packet_id=2)
    pub.publish("nobody", qos=1, packet_id=3)  # needs nothing, but comes after 1 and 2
    b.ack(_delivered(b))
    assert pub.packets() == []  # 2 is ready, 1 is not: 2 waits [MQTT-4.6.0-2]
    a.ack(_delivered(a))
    assert pub.packets() == [PubAck(1), PubAck(2), PubAck(3)]


def test_the_commit_sends_the_puback_when_the_receiver_never_acks() -> None:
    store = DeferredStore()
    harness = Harness(store=store)
    sub = _persistent_subscriber(harness, "sub")
    pub = harness.connected("pub")
    pub.publish("t", qos=1, packet_id=1)
    assert _delivered(sub).packet_id is not None
    sub.lose()
    store.commit()
    assert pub.packets() == [PubAck(1)]


def test_a_clean_receiver_does_not_hold_the_puback() -> None:
    store = DeferredStore()
    harness = Harness(store=store)
    sub = harness.connected("sub")
    sub.subscribe("t", qos=1)
    pub = harness.connected("pub")
    pub.publish("t", qos=1, packet_id=1)
    assert pub.packets() == [PubAck(1)]  # nothing recorded: at once, as before
    assert store.waiting == []


def test_the_acks_of_one_read_wait_on_one_after_commit() -> None:
    # register_commit_wait: one registration for a read's acks, after the last of
    # them was recorded, not one per PUBLISH.
    store = DeferredStore()
    harness = Harness(store=store)
    _persistent_subscriber(harness, "sub")
    pub = harness.connected("pub")
    pub.send(*(Publish("t", b"x", 1, False, False, pid) for pid in (1, 2, 3)))
    assert pub.packets() == []
    assert store.patient == [True]
    pub.publish("t", qos=1, packet_id=4)  # another read: another registration
    assert store.patient == [True, True]
    store.commit()
    assert pub.packets() == [PubAck(1), PubAck(2), PubAck(3), PubAck(4)]
    assert pub.conn.qos1_unacked == 0


def test_one_urgent_ack_makes_the_reads_registration_urgent() -> None:
    store = DeferredStore()
    harness = Harness(store=store)
    sub = _persistent_subscriber(harness, "sub")
    pub = harness.connected("pub")
    pub.send(
        Publish("t", b"x", 1, False, False, 1),
        Publish("t", b"x", 1, True, False, 2),  # retained: only the commit releases it
    )
    assert store.patient == [False]
    for publish in sub.publishes():
        sub.ack(publish)
    assert pub.packets() == [PubAck(1)]  # released early; 2 waits for the commit
    store.commit()
    assert pub.packets() == [PubAck(2)]


# -- no PublisherAck unless a persistent delivery holds the PUBACK (issue 19) ----------


def _count_publisher_acks(monkeypatch: pytest.MonkeyPatch) -> list[PublisherAck]:
    """Every PublisherAck made from now on, in order."""
    made: list[PublisherAck] = []
    init = PublisherAck.__init__

    def counting(self: PublisherAck, on_ready: Callable[[], None]) -> None:
        init(self, on_ready)
        made.append(self)

    monkeypatch.setattr(PublisherAck, "__init__", counting)
    return made


def test_with_clean_receivers_only_the_puback_is_written_in_the_same_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = DeferredStore()
    harness = Harness(store=store)
    subs = [harness.connected(f"sub{i}") for i in range(2)]
    for sub in subs:
        sub.subscribe("t", qos=1)
    pub = harness.connected("pub")
    made = _count_publisher_acks(monkeypatch)
    pub.send(*(Publish("t", b"x", 1, False, False, pid) for pid in (1, 2, 3)))
    # No commit, no receiver's PUBACK: the publisher has its acks already.
    assert pub.packets() == [PubAck(1), PubAck(2), PubAck(3)]
    assert made == []  # nothing could hold them: no PublisherAck per message
    assert pub.conn.acks is None
    assert pub.conn.qos1_unacked == 0
    assert store.waiting == []
    assert harness.broker.acking is None and harness.broker.pending_ack is None
    for sub in subs:
        assert len(sub.publishes()) == 3


def test_with_no_subscriber_a_v5_puback_says_so_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    harness = Harness(store=DeferredStore())
    pub = harness.connected("pub", level=5)
    made = _count_publisher_acks(monkeypatch)
    pub.publish("nobody", qos=1, packet_id=7)
    [ack] = pub.packets()
    assert isinstance(ack, PubAck)
    assert (ack.packet_id, ack.reason_code) == (7, ReasonCode.NO_MATCHING_SUBSCRIBERS)
    assert made == []
    assert pub.conn.qos1_unacked == 0


def test_a_persistent_receiver_at_qos0_records_nothing_so_holds_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = DeferredStore()
    harness = Harness(store=store)
    sub = harness.connected("sub", clean_start=False)
    sub.subscribe("t", qos=0)
    store.commit()
    pub = harness.connected("pub")
    made = _count_publisher_acks(monkeypatch)
    pub.publish("t", qos=1, packet_id=1)
    assert pub.packets() == [PubAck(1)]
    assert made == []


def test_a_persistent_receiver_beside_a_clean_one_still_holds_the_puback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The clean receiver is matched first; the persistent one makes the PublisherAck.
    store = DeferredStore()
    harness = Harness(store=store)
    clean = harness.connected("clean")
    clean.subscribe("t", qos=1)
    durable = _persistent_subscriber(harness, "durable")
    store.commit()
    pub = harness.connected("pub")
    made = _count_publisher_acks(monkeypatch)
    pub.publish("t", qos=1, packet_id=1)
    clean.ack(_delivered(clean))
    assert pub.packets() == []  # recorded for "durable": neither commit nor its PUBACK yet
    assert len(made) == 1 and made[0].holders == 1
    assert len(store.waiting) == 1
    store.commit()
    assert pub.packets() == [PubAck(1)]  # the commit made it durable
    durable.ack(_delivered(durable))
    assert pub.packets() == []  # sent once
    assert pub.conn.qos1_unacked == 0


def test_a_puback_needing_nothing_still_waits_behind_a_held_one() -> None:
    # The PUBACK written at once (clean receiver) must not overtake one held for a
    # persistent receiver in the same read [MQTT-4.6.0-2].
    store = DeferredStore()
    harness = Harness(store=store)
    _persistent_subscriber(harness, "durable", "td")
    clean = harness.connected("clean")
    clean.subscribe("tc", qos=1)
    store.commit()
    pub = harness.connected("pub")
    pub.send(Publish("td", b"x", 1, False, False, 1), Publish("tc", b"x", 1, False, False, 2))
    assert pub.packets() == []
    assert pub.conn.qos1_unacked == 2
    store.commit()
    assert pub.packets() == [PubAck(1), PubAck(2)]
    assert pub.conn.qos1_unacked == 0
