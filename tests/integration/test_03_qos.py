"""QoS 1 and 2 flows byte by byte, in both directions, with raw-socket clients."""

from __future__ import annotations

import pytest
from mqtt_raw import (
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    Packet,
    RawClient,
    gen_pingreq,
    gen_pingresp,
    gen_puback,
    gen_pubcomp,
    gen_publish,
    gen_pubrec,
    gen_pubrel,
)

from .conftest import RawFactory

pytestmark = pytest.mark.timeout(30)

VERSIONS = pytest.mark.parametrize("proto_ver", [4, 5], ids=["v311", "v5"])


def _expect_ack(client: RawClient, packet_type: int, mid: int, proto_ver: int) -> Packet:
    """An ack for ``mid`` meaning success: 3.1.1 byte-exact, 5.0 short form or reason 0."""
    packet = client.expect_type(packet_type)
    assert packet.mid() == mid, packet.raw.hex(" ")
    if proto_ver == 4:
        assert packet.body == mid.to_bytes(2, "big"), packet.raw.hex(" ")
    else:
        # 0x10 No matching subscribers is a success too (5.0 3.4.2.1, 3.5.2.1).
        assert packet.reason_code() in (0x00, 0x10), packet.raw.hex(" ")
    return packet


@VERSIONS
def test_qos1_publish_is_acknowledged_with_puback(
    raw: RawFactory, uid: str, topic: str, proto_ver: int
) -> None:
    client = raw()
    client.connect(uid, proto_ver=proto_ver)
    client.send(gen_publish(topic, qos=1, mid=0x1234, payload=b"q1", proto_ver=proto_ver))
    packet = _expect_ack(client, PUBACK, 0x1234, proto_ver)
    assert packet.flags == 0


@VERSIONS
def test_qos2_publish_flow_pubrec_pubrel_pubcomp(
    raw: RawFactory, uid: str, topic: str, proto_ver: int
) -> None:
    client = raw()
    client.connect(uid, proto_ver=proto_ver)
    client.send(gen_publish(topic, qos=2, mid=7, payload=b"q2", proto_ver=proto_ver))
    _expect_ack(client, PUBREC, 7, proto_ver)
    client.send(gen_pubrel(7, proto_ver=proto_ver))
    _expect_ack(client, PUBCOMP, 7, proto_ver)


@VERSIONS
def test_qos2_publish_resent_before_pubrel_is_delivered_exactly_once(
    raw: RawFactory, uid: str, topic: str, proto_ver: int
) -> None:
    subscriber = raw()
    subscriber.connect(f"{uid}-sub", proto_ver=proto_ver)
    subscriber.subscribe(1, topic, 0, proto_ver=proto_ver)
    publisher = raw()
    publisher.connect(f"{uid}-pub", proto_ver=proto_ver)
    publish = gen_publish(topic, qos=2, mid=9, payload=b"once", proto_ver=proto_ver)
    publisher.send(publish)
    _expect_ack(publisher, PUBREC, 9, proto_ver)
    # The publisher did not see the PUBREC (as far as the broker knows) and resends.
    publisher.send(gen_publish(topic, qos=2, mid=9, payload=b"once", dup=True, proto_ver=proto_ver))
    _expect_ack(publisher, PUBREC, 9, proto_ver)
    publisher.send(gen_pubrel(9, proto_ver=proto_ver))
    _expect_ack(publisher, PUBCOMP, 9, proto_ver)
    # A marker after the flow: the subscriber sees "once" exactly once, then the marker.
    publisher.send(gen_publish(topic, qos=0, payload=b"marker", proto_ver=proto_ver))
    first = subscriber.expect_type(PUBLISH).publish(proto_ver)
    second = subscriber.expect_type(PUBLISH).publish(proto_ver)
    assert (first.payload, second.payload) == (b"once", b"marker")


@VERSIONS
def test_pubrel_for_unknown_packet_id_still_gets_pubcomp(
    raw: RawFactory, uid: str, proto_ver: int
) -> None:
    client = raw()
    client.connect(uid, proto_ver=proto_ver)
    # After a reconnect a sender may resend a PUBREL the broker already completed; it is
    # answered so the sender can free the id (5.0 allows 0x92 Packet Identifier not found).
    client.send(gen_pubrel(77, proto_ver=proto_ver))
    packet = client.expect_type(PUBCOMP)
    assert packet.mid() == 77
    assert packet.reason_code() in (0x00, 0x92), packet.raw.hex(" ")
    client.send(gen_pingreq())
    client.expect_packet(gen_pingresp(), "PINGRESP")


@VERSIONS
def test_broker_delivers_qos1_and_completes_on_puback(
    raw: RawFactory, uid: str, topic: str, proto_ver: int
) -> None:
    subscriber = raw()
    subscriber.connect(f"{uid}-sub", proto_ver=proto_ver)
    subscriber.subscribe(1, topic, 1, proto_ver=proto_ver)
    publisher = raw()
    publisher.connect(f"{uid}-pub", proto_ver=proto_ver)
    publisher.send(gen_publish(topic, qos=1, mid=3, payload=b"to-sub", proto_ver=proto_ver))
    _expect_ack(publisher, PUBACK, 3, proto_ver)
    delivered = subscriber.expect_type(PUBLISH)
    view = delivered.publish(proto_ver)
    assert (view.topic, view.payload, view.qos, view.dup, view.retain) == (
        topic,
        b"to-sub",
        1,
        False,
        False,
    )
    assert view.mid != 0  # [MQTT-2.3.1-1] non-zero packet identifier
    if proto_ver == 4:
        assert delivered.raw == gen_publish(topic, qos=1, mid=view.mid, payload=b"to-sub")
    subscriber.send(gen_puback(view.mid, proto_ver=proto_ver))
    subscriber.expect_silence(0.3)  # acknowledged: no redelivery


@VERSIONS
def test_broker_delivers_qos2_with_full_handshake(
    raw: RawFactory, uid: str, topic: str, proto_ver: int
) -> None:
    subscriber = raw()
    subscriber.connect(f"{uid}-sub", proto_ver=proto_ver)
    subscriber.subscribe(1, topic, 2, proto_ver=proto_ver)
    publisher = raw()
    publisher.connect(f"{uid}-pub", proto_ver=proto_ver)
    publisher.send(gen_publish(topic, qos=2, mid=4, payload=b"exactly", proto_ver=proto_ver))
    _expect_ack(publisher, PUBREC, 4, proto_ver)
    publisher.send(gen_pubrel(4, proto_ver=proto_ver))
    _expect_ack(publisher, PUBCOMP, 4, proto_ver)
    view = subscriber.expect_type(PUBLISH).publish(proto_ver)
    assert (view.payload, view.qos) == (b"exactly", 2)
    subscriber.send(gen_pubrec(view.mid, proto_ver=proto_ver))
    pubrel = subscriber.expect_type(6)
    assert pubrel.flags == 0x02, "PUBREL fixed-header flags must be 0010 [MQTT-3.6.1-1]"
    assert pubrel.mid() == view.mid
    subscriber.send(gen_pubcomp(view.mid, proto_ver=proto_ver))
    subscriber.expect_silence(0.3)


def test_inflight_packet_ids_are_distinct(raw: RawFactory, uid: str, topic: str) -> None:
    subscriber = raw()
    subscriber.connect(f"{uid}-sub")
    subscriber.subscribe(1, topic, 1)
    publisher = raw()
    publisher.connect(f"{uid}-pub")
    for i in range(10):
        publisher.send(gen_publish(topic, qos=1, mid=i + 1, payload=str(i).encode()))
    mids = []
    for i in range(10):
        view = subscriber.expect_type(PUBLISH).publish()
        assert view.payload == str(i).encode()
        mids.append(view.mid)
    # Nothing acknowledged yet: every inflight message needs its own id [MQTT-2.3.1-2].
    assert len(set(mids)) == 10
    for mid in mids:
        subscriber.send(gen_puback(mid))


def test_unacknowledged_qos1_is_resent_with_dup_on_reconnect(
    raw: RawFactory, uid: str, topic: str
) -> None:
    subscriber = raw()
    subscriber.connect(uid, clean_session=False)
    subscriber.subscribe(1, topic, 1)
    publisher = raw()
    publisher.connect(f"{uid}-pub")
    publisher.send(gen_publish(topic, qos=1, mid=1, payload=b"unacked"))
    publisher.expect_packet(gen_puback(1), "PUBACK")
    first = subscriber.expect_type(PUBLISH).publish()
    assert first.payload == b"unacked"
    subscriber.abort()  # gone without PUBACK
    again = raw()
    again.connect(uid, clean_session=False, session_present=True)
    # [MQTT-4.4.0-1]: resend unacknowledged PUBLISH with the same id and DUP=1.
    resent = again.expect_type(PUBLISH)
    view = resent.publish()
    assert (view.payload, view.mid, view.dup, view.qos) == (b"unacked", first.mid, True, 1)
    again.send(gen_puback(view.mid))
    again.expect_silence(0.3)
    again.disconnect()
    forget = raw()  # leave no persistent session behind on the shared broker
    forget.connect(uid, clean_session=True, session_present=False)
    forget.disconnect()
