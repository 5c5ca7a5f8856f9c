"""Bursts, fan-out, odd but legal input, and wills after the broker cuts a client off."""

from __future__ import annotations

import threading

import pytest
from mqtt_raw import (
    DISCONNECT,
    PINGRESP,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    gen_pingreq,
    gen_pingresp,
    gen_puback,
    gen_pubcomp,
    gen_publish,
    gen_pubrec,
    gen_pubrel,
)

from .conftest import PahoFactory, RawFactory
from .paho_client import V5, V311

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("proto_ver", [4, 5], ids=["v311", "v5"])
def test_will_is_published_when_the_broker_cuts_off_a_violating_client(
    paho: PahoFactory, raw: RawFactory, uid: str, topic: str, proto_ver: int
) -> None:
    watcher = paho(f"{uid}-watch", protocol=V5 if proto_ver == 5 else V311)
    watcher.subscribe(f"{topic}/will", 1)
    client = raw()
    client.connect(uid, proto_ver=proto_ver, will_topic=f"{topic}/will", will_payload=b"cut")
    client.send(gen_publish("a", qos=3, mid=1, proto_ver=proto_ver))  # Malformed
    client.expect_closed(3, allow=[DISCONNECT])
    # [MQTT-3.1.2-8]: closed by the server for a protocol error = not a normal DISCONNECT.
    assert watcher.expect_message(3).payload == b"cut"


def test_many_retained_messages_arrive_on_one_wildcard_subscribe(
    raw: RawFactory, uid: str, topic: str
) -> None:
    publisher = raw()
    publisher.connect(f"{uid}-pub")
    count = 200
    batch = b"".join(
        gen_publish(f"{topic}/r/{i}", qos=1, mid=i + 1, retain=True, payload=str(i).encode())
        for i in range(count)
    )
    publisher.send(batch)
    for _ in range(count):
        publisher.expect_type(4)
    subscriber = raw()
    subscriber.connect(f"{uid}-sub")
    subscriber.subscribe(1, f"{topic}/r/#", 1)
    # More than any inflight window: the broker must queue and drain as acks come back.
    got = subscriber.receive_publishes(count, timeout=10)
    assert sorted(int(m.payload) for m in got) == list(range(count))
    assert all(m.retain for m in got)
    publisher.send(b"".join(gen_publish(f"{topic}/r/{i}", retain=True) for i in range(count)))
    publisher.send(gen_pingreq())
    publisher.expect_packet(gen_pingresp(), "PINGRESP")


def test_fan_out_to_many_subscribers_delivers_every_message_once_in_order(
    paho: PahoFactory, uid: str, topic: str
) -> None:
    subscribers = [paho(f"{uid}-s{i}", protocol=V5 if i % 2 else V311) for i in range(8)]
    for subscriber in subscribers:
        subscriber.subscribe(topic, 1)
    publisher = paho(f"{uid}-pub")
    infos = [publisher.client.publish(topic, str(i).encode(), 1) for i in range(100)]
    for info in infos:
        info.wait_for_publish(10)
    expected = [str(i).encode() for i in range(100)]
    for subscriber in subscribers:
        assert [m.payload for m in subscriber.expect_messages(100, 10)] == expected
        subscriber.expect_no_message(0.05)


def test_ack_for_an_unknown_packet_id_is_ignored(raw: RawFactory, uid: str) -> None:
    client = raw()
    client.connect(uid)
    client.send(gen_puback(999) + gen_pubrec(998) + gen_pubcomp(997))
    # PUBREC for an unknown id may be answered with PUBREL; the connection stays up.
    client.send(gen_pingreq())
    while True:
        packet = client.read_packet()
        assert packet is not None, "closed for an ack of an unknown packet id"
        if packet.type == PINGRESP:
            break
        assert packet.type == PUBREL, packet.describe()


@pytest.mark.parametrize("proto_ver", [4, 5], ids=["v311", "v5"])
def test_unicode_topics_and_empty_payloads_round_trip(
    raw: RawFactory, uid: str, topic: str, proto_ver: int
) -> None:
    subscriber = raw()
    subscriber.connect(f"{uid}-sub", proto_ver=proto_ver)
    name = f"{topic}/température/日本/🚀 space"
    subscriber.subscribe(1, f"{topic}/+/日本/#", 2, proto_ver=proto_ver)
    publisher = raw()
    publisher.connect(f"{uid}-pub", proto_ver=proto_ver)
    publisher.send(gen_publish(name, qos=2, mid=3, payload=b"", proto_ver=proto_ver))
    publisher.expect_type(PUBREC)
    publisher.send(gen_pubrel(3, proto_ver=proto_ver))
    publisher.expect_type(PUBCOMP)
    got = subscriber.receive_publishes(1, proto_ver=proto_ver)
    assert (got[0].topic, got[0].payload, got[0].qos) == (name, b"", 2)


def test_publish_split_across_many_segments_is_reassembled(
    raw: RawFactory, uid: str, topic: str
) -> None:
    client = raw()
    client.connect(uid)
    client.subscribe(1, topic, 0)
    packet = gen_publish(topic, payload=bytes(range(256)) * 40)
    for start in range(0, len(packet), 7):
        client.send(packet[start : start + 7])
    received = client.expect_type(PUBLISH)
    assert received.raw == packet


def test_qos1_burst_to_a_live_subscriber_is_not_dropped(
    raw: RawFactory, uid: str, topic: str
) -> None:
    """A publisher faster than a subscriber that keeps acknowledging must be slowed down
    (design: "pause reading a publisher whose receivers are saturated"), not have its
    acknowledged QoS 1 messages dropped from the subscriber's queue.
    """
    count = 3000  # more than max_queued_messages (1000) + the inflight window
    subscriber = raw(timeout=20)
    subscriber.connect(f"{uid}-sub")
    subscriber.subscribe(1, topic, 1)
    publisher = raw(timeout=20)
    publisher.connect(f"{uid}-pub")
    acks: list[int] = []

    def read_acks() -> None:
        while len(acks) < count:
            packet = publisher.read_packet()
            if packet is None:
                return
            acks.append(packet.mid())

    reader = threading.Thread(target=read_acks, daemon=True)
    reader.start()
    for start in range(0, count, 100):
        publisher.send(
            b"".join(
                gen_publish(topic, qos=1, mid=i + 1, payload=str(i).encode())
                for i in range(start, start + 100)
            )
        )
    got = subscriber.receive_publishes(count, timeout=10)
    reader.join(5)
    assert [int(m.payload) for m in got] == list(range(count))
    assert len(acks) == count
