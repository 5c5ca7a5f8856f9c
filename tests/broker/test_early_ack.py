"""A QoS 1 publisher's PUBACK goes once the store committed the message or once every
persistent receiver acknowledged it, whichever comes first (outbound.PublisherAck)."""

from __future__ import annotations

from support.core import Client, DeferredStore, Harness, settings

from mqttd.protocol import PubAck, Publish


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
