"""Corners of the protocol that simple clients rarely reach: QoS 2 across reconnects,
overlapping subscriptions, per-filter SUBACK codes, 5.0 DISCONNECT and AUTH rules.
"""

from __future__ import annotations

import pytest
from mqtt_raw import (
    AUTHENTICATION_METHOD,
    CONNACK,
    DISCONNECT,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SESSION_EXPIRY_INTERVAL,
    SUBACK,
    UNSUBACK,
    decode_properties,
    gen_connect,
    gen_disconnect,
    gen_puback,
    gen_pubcomp,
    gen_publish,
    gen_pubrec,
    gen_pubrel,
    gen_subscribe,
    gen_unsuback,
    gen_unsubscribe,
    prop_str,
    prop_u32,
)

from .conftest import RawFactory

pytestmark = pytest.mark.timeout(30)


def test_pubrel_is_resent_after_reconnect_when_pubcomp_was_missing(
    raw: RawFactory, uid: str, topic: str
) -> None:
    subscriber = raw()
    subscriber.connect(uid, clean_session=False)
    subscriber.subscribe(1, topic, 2)
    publisher = raw()
    publisher.connect(f"{uid}-pub")
    publisher.send(gen_publish(topic, qos=2, mid=1, payload=b"two-phase"))
    publisher.expect_type(PUBREC)
    publisher.send(gen_pubrel(1))
    publisher.expect_type(PUBCOMP)
    view = subscriber.expect_type(PUBLISH).publish()
    subscriber.send(gen_pubrec(view.mid))
    subscriber.expect_type(PUBREL)
    subscriber.abort()  # no PUBCOMP
    again = raw()
    again.connect(uid, clean_session=False, session_present=True)
    # [MQTT-4.4.0-1]: the PUBREL is resent; the message itself is not sent again.
    pubrel = again.expect_type(PUBREL)
    assert pubrel.mid() == view.mid and pubrel.flags == 0x02
    again.send(gen_pubcomp(view.mid))
    again.expect_silence(0.3)
    again.disconnect()
    cleanup = raw()
    cleanup.connect(uid, clean_session=True)
    cleanup.disconnect()


def test_inbound_qos2_completes_across_a_reconnect_and_is_delivered_once(
    raw: RawFactory, uid: str, topic: str
) -> None:
    subscriber = raw()
    subscriber.connect(f"{uid}-sub")
    subscriber.subscribe(1, topic, 0)
    publisher = raw()
    publisher.connect(uid, clean_session=False)
    publisher.send(gen_publish(topic, qos=2, mid=5, payload=b"once"))
    publisher.expect_type(PUBREC)
    publisher.abort()  # gone before PUBREL
    back = raw()
    back.connect(uid, clean_session=False, session_present=True)
    back.send(gen_pubrel(5))  # the sender resumes with PUBREL [MQTT-4.4.0-1]
    comp = back.expect_type(PUBCOMP)
    assert comp.mid() == 5
    back.send(gen_publish(topic, payload=b"marker"))
    payloads = [subscriber.expect_type(PUBLISH).publish().payload for _ in range(2)]
    assert payloads == [b"once", b"marker"]
    back.disconnect()
    cleanup = raw()
    cleanup.connect(uid, clean_session=True)
    cleanup.disconnect()


def test_overlapping_subscriptions_deliver_at_the_highest_granted_qos(
    raw: RawFactory, uid: str, topic: str
) -> None:
    client = raw()
    client.connect(uid)
    client.subscribe(1, f"{topic}/#", 0)
    client.subscribe(2, f"{topic}/+", 2)
    publisher = raw()
    publisher.connect(f"{uid}-pub")
    publisher.send(gen_publish(f"{topic}/x", qos=2, mid=1, payload=b"overlap"))
    publisher.expect_type(PUBREC)
    publisher.send(gen_pubrel(1))
    publisher.expect_type(PUBCOMP)
    first = client.expect_type(PUBLISH).publish()
    copies = [first]
    try:  # 3.1.1 allows one copy per matching subscription [MQTT-3.3.5-1]
        second = client.read_packet(0.3)
    except TimeoutError:
        second = None
    if second is not None and second.type == PUBLISH:
        copies.append(second.publish())
    assert max(c.qos for c in copies) == 2, copies


@pytest.mark.parametrize("proto_ver", [4, 5], ids=["v311", "v5"])
def test_unsubscribe_from_a_filter_never_subscribed_is_acknowledged(
    raw: RawFactory, uid: str, proto_ver: int
) -> None:
    client = raw()
    client.connect(uid, proto_ver=proto_ver)
    client.send(gen_unsubscribe(3, "never/subscribed", proto_ver=proto_ver))
    if proto_ver == 4:
        client.expect_packet(gen_unsuback(3), "UNSUBACK")  # [MQTT-3.10.4-5]
    else:
        unsuback = client.expect_type(UNSUBACK)
        end = decode_properties(unsuback.body, 2)[1]
        assert unsuback.body[end:] == bytes([0x11])  # No subscription existed


def test_v5_suback_has_one_reason_code_per_filter(raw: RawFactory, uid: str, topic: str) -> None:
    client = raw()
    client.connect(uid, proto_ver=5)
    client.send(
        gen_subscribe(
            7, [(f"{topic}/ok", 1), (f"{topic}/#/bad", 1), (f"{topic}/also", 2)], proto_ver=5
        )
    )
    packet = client.read_packet()
    assert packet is not None, "closed instead of answering"
    if packet.type == SUBACK:
        end = decode_properties(packet.body, 2)[1]
        codes = list(packet.body[end:])
        assert codes[0] == 1 and codes[2] == 2, codes
        assert codes[1] >= 0x80, f"invalid filter granted: {codes}"  # 0x8F expected
    else:  # closing is allowed for a malformed filter too
        assert packet.reason_code() in (0x81, 0x82, 0x8F), packet.describe()


def test_v5_disconnect_setting_session_expiry_after_zero_is_a_protocol_error(
    raw: RawFactory, uid: str
) -> None:
    client = raw()
    client.connect(uid, proto_ver=5)  # Session Expiry Interval absent = 0
    client.send(gen_disconnect(proto_ver=5, rc=0, properties=prop_u32(SESSION_EXPIRY_INTERVAL, 60)))
    # [MQTT-3.14.2-2]: the server answers with DISCONNECT 0x82, or just closes.
    packets = client.expect_closed(3, allow=[DISCONNECT])
    if packets:
        assert packets[0].reason_code() == 0x82, packets[0].describe()


def test_v5_unknown_authentication_method_is_refused_0x8c(raw: RawFactory, uid: str) -> None:
    client = raw()
    method = prop_str(AUTHENTICATION_METHOD, "NO-SUCH-METHOD")
    client.send(gen_connect(uid, proto_ver=5, properties=method))
    packets = client.expect_closed(3, allow=[CONNACK])
    assert packets, "no CONNACK"
    assert packets[0].reason_code() == 0x8C  # Bad authentication method (5.0 4.12)


def test_v5_no_local_on_a_shared_subscription_is_a_protocol_error(
    raw: RawFactory, uid: str, topic: str
) -> None:
    client = raw()
    client.connect(uid, proto_ver=5)
    client.send(gen_subscribe(1, [(f"$share/g/{topic}", 0x04 | 1)], proto_ver=5))
    # [MQTT-3.8.3-4]: DISCONNECT 0x82 (some brokers refuse the filter in SUBACK instead).
    packet = client.read_packet()
    if packet is not None and packet.type == SUBACK:
        end = decode_properties(packet.body, 2)[1]
        assert packet.body[end] >= 0x80, packet.describe()
    else:
        assert packet is not None and packet.reason_code() == 0x82, packet
        client.expect_closed(3)


@pytest.mark.parametrize("proto_ver", [4, 5], ids=["v311", "v5"])
def test_takeover_of_a_persistent_session_resends_its_unacknowledged_messages(
    raw: RawFactory, uid: str, topic: str, proto_ver: int
) -> None:
    keep = prop_u32(SESSION_EXPIRY_INTERVAL, 60)  # ignored by gen_connect for 3.1.1
    first = raw()
    first.connect(uid, proto_ver=proto_ver, clean_session=False, properties=keep)
    first.subscribe(1, topic, 1, proto_ver=proto_ver)
    publisher = raw()
    publisher.connect(f"{uid}-pub", proto_ver=proto_ver)
    publisher.send(gen_publish(topic, qos=1, mid=1, payload=b"inflight", proto_ver=proto_ver))
    sent = first.expect_type(PUBLISH).publish(proto_ver)  # and never acknowledged
    second = raw()
    second.connect(uid, proto_ver=proto_ver, clean_session=False, session_present=True)
    first.expect_closed(3, allow=[DISCONNECT])
    again = second.expect_type(PUBLISH).publish(proto_ver)
    assert (again.payload, again.mid, again.dup) == (b"inflight", sent.mid, True)
    second.send(gen_puback(again.mid, proto_ver=proto_ver))
    second.disconnect(proto_ver=proto_ver)
    if proto_ver == 4:
        cleanup = raw()
        cleanup.connect(uid, clean_session=True)
        cleanup.disconnect()


def test_retained_messages_are_not_resent_when_a_session_resumes(
    raw: RawFactory, uid: str, topic: str
) -> None:
    publisher = raw()
    publisher.connect(f"{uid}-pub")
    publisher.send(gen_publish(topic, qos=1, mid=1, retain=True, payload=b"once"))
    publisher.expect_type(PUBACK)
    subscriber = raw()
    subscriber.connect(uid, clean_session=False)
    subscriber.subscribe(1, topic, 1)
    [first] = subscriber.receive_publishes(1)
    assert (first.payload, first.retain) == (b"once", True)
    subscriber.disconnect()
    back = raw()
    back.connect(uid, clean_session=False, session_present=True)
    # Retained messages go out on SUBSCRIBE [MQTT-3.3.1-6], not on every reconnect.
    back.expect_silence(0.5)
    back.disconnect()
    cleanup = raw()
    cleanup.connect(uid, clean_session=True)
    cleanup.disconnect()
    publisher.send(gen_publish(topic, retain=True))


def test_v5_retain_handling_1_sends_retained_only_for_a_new_subscription(
    raw: RawFactory, uid: str, topic: str
) -> None:
    publisher = raw()
    publisher.connect(f"{uid}-pub", proto_ver=5)
    publisher.send(gen_publish(topic, qos=1, mid=1, retain=True, payload=b"r", proto_ver=5))
    publisher.expect_type(PUBACK)
    client = raw()
    client.connect(uid, proto_ver=5)
    options = 0x10 | 1  # Retain Handling 1, QoS 1 (5.0 3.8.3.1)
    client.send(gen_subscribe(1, [(topic, options)], proto_ver=5))
    client.expect_type(SUBACK)
    [retained] = client.receive_publishes(1, proto_ver=5)
    assert retained.retain
    client.send(gen_subscribe(2, [(topic, options)], proto_ver=5))  # exists now
    client.expect_type(SUBACK)
    client.expect_silence(0.4)
    publisher.send(gen_publish(topic, retain=True, proto_ver=5))
