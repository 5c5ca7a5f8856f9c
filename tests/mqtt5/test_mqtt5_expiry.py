"""Session Expiry Interval (3.1.2.11.2, 3.14.2.2.2) and Message Expiry Interval
(3.3.2.3.3) over a real socket, with paho MQTTv5.

The timers themselves run on the core's FakeClock (tests/broker/test_session.py,
test_v5_features.py, test_retain_delivery.py); the end-to-end smoke tests that wait in
real time are tests/integration/test_05_session.py and test_12_v5_features.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mqtt_raw import SESSION_EXPIRY_INTERVAL, RawClient, gen_disconnect, prop_u32
from support.v5 import V5Client, props_of

if TYPE_CHECKING:
    from conftest import InProcessBroker


def persistent(broker: InProcessBroker, client_id: str, expiry: int) -> V5Client:
    return V5Client(broker.host, broker.port, client_id, clean=False, session_expiry=expiry)


def has_session(broker: InProcessBroker, client_id: str) -> bool:
    return broker.call(lambda: client_id in broker.broker.sessions)


def test_session_outlives_its_connection_for_the_expiry_interval(
    v5broker: InProcessBroker, uid: str
) -> None:
    sub = persistent(v5broker, f"{uid}-sub", 2)
    sub.connect()
    sub.subscribe(f"{uid}/t", 1)
    sub.disconnect()
    with V5Client(v5broker.host, v5broker.port, f"{uid}-pub") as pub:
        pub.connect()
        pub.publish(f"{uid}/t", b"kept", qos=1)
    with persistent(v5broker, f"{uid}-sub", 2) as back:
        assert back.connect().session_present
        assert back.expect_message().payload == b"kept"


def test_expiry_0xffffffff_never_expires(v5broker: InProcessBroker, uid: str) -> None:
    sub = persistent(v5broker, uid, 0xFFFFFFFF)
    sub.connect()
    sub.disconnect()
    assert v5broker.call(lambda: v5broker.broker.sessions[uid].expiry_timer) is None
    assert has_session(v5broker, uid)


def test_disconnect_can_change_the_expiry_interval(v5broker: InProcessBroker, uid: str) -> None:
    with RawClient(v5broker.host, v5broker.port) as client:
        client.connect(uid, proto_ver=5, properties=prop_u32(SESSION_EXPIRY_INTERVAL, 10))
        client.send(
            gen_disconnect(proto_ver=5, rc=0, properties=prop_u32(SESSION_EXPIRY_INTERVAL, 0))
        )
        client.expect_closed()
    assert not has_session(v5broker, uid)  # 0 at DISCONNECT: the session ends now
    with RawClient(v5broker.host, v5broker.port) as client:
        client.connect(uid, proto_ver=5, properties=prop_u32(SESSION_EXPIRY_INTERVAL, 10))
        client.send(
            gen_disconnect(proto_ver=5, rc=0, properties=prop_u32(SESSION_EXPIRY_INTERVAL, 100))
        )
        client.expect_closed()
    assert v5broker.call(lambda: v5broker.broker.sessions[uid].expiry_interval) == 100


def test_disconnect_setting_an_expiry_after_0_is_a_protocol_error(
    v5broker: InProcessBroker, uid: str
) -> None:
    with RawClient(v5broker.host, v5broker.port) as client:
        client.connect(uid, proto_ver=5)  # Session Expiry Interval absent: 0
        client.send(
            gen_disconnect(proto_ver=5, rc=0, properties=prop_u32(SESSION_EXPIRY_INTERVAL, 60))
        )
        client.expect_disconnect(0x82)  # [MQTT-3.14.2-2]
    assert not has_session(v5broker, uid)


# -- Message Expiry Interval -----------------------------------------------------------------


def test_live_delivery_carries_the_expiry_interval(v5broker: InProcessBroker, uid: str) -> None:
    with (
        V5Client(v5broker.host, v5broker.port, f"{uid}-sub") as sub,
        V5Client(v5broker.host, v5broker.port, f"{uid}-pub") as pub,
    ):
        sub.connect()
        pub.connect()
        sub.subscribe(f"{uid}/t", 1)
        pub.publish_v5(f"{uid}/t", b"m", 1, MessageExpiryInterval=99).wait_for_publish(5)
        message = sub.expect_message()
        assert props_of(message).MessageExpiryInterval in (98, 99)
