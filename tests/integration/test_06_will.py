"""Will messages: published when a connection dies without DISCONNECT, never after one."""

from __future__ import annotations

import pytest
from mqtt_raw import SESSION_EXPIRY_INTERVAL, WILL_DELAY_INTERVAL, gen_disconnect, prop_u32

from .conftest import PahoFactory, RawFactory
from .paho_client import V5, V311

pytestmark = pytest.mark.timeout(30)

VERSIONS = pytest.mark.parametrize("proto_ver", [4, 5], ids=["v311", "v5"])


def _protocol(proto_ver: int) -> int:
    return V5 if proto_ver == 5 else V311


@VERSIONS
@pytest.mark.parametrize("how", ["close", "reset"])
def test_will_is_published_when_the_socket_dies_without_disconnect(
    paho: PahoFactory, raw: RawFactory, uid: str, topic: str, proto_ver: int, how: str
) -> None:
    watcher = paho(f"{uid}-watch", protocol=_protocol(proto_ver))
    watcher.subscribe(f"{topic}/will", 1)
    device = raw()
    device.connect(
        uid,
        proto_ver=proto_ver,
        will_topic=f"{topic}/will",
        will_payload=b"device lost",
        will_qos=1,
    )
    if how == "close":
        device.close()  # FIN, no DISCONNECT
    else:
        device.abort()  # RST
    message = watcher.expect_message(3)
    assert (message.topic, message.payload, message.qos, message.retain) == (
        f"{topic}/will",
        b"device lost",
        1,
        False,
    )


@VERSIONS
def test_no_will_after_a_normal_disconnect(
    paho: PahoFactory, raw: RawFactory, uid: str, topic: str, proto_ver: int
) -> None:
    watcher = paho(f"{uid}-watch", protocol=_protocol(proto_ver))
    watcher.subscribe(f"{topic}/will", 1)
    device = raw()
    device.connect(uid, proto_ver=proto_ver, will_topic=f"{topic}/will", will_payload=b"lost")
    device.send(gen_disconnect(proto_ver=proto_ver))
    device.expect_closed()  # the broker has handled the DISCONNECT
    # [MQTT-3.1.2-10]: the will is discarded on DISCONNECT. A marker on the same topic,
    # published after the close, must be the first thing the watcher sees.
    paho(f"{uid}-marker", protocol=_protocol(proto_ver)).publish(f"{topic}/will", b"marker", 1)
    assert watcher.expect_message().payload == b"marker"
    watcher.expect_no_message(0.3)


def test_will_is_published_when_a_paho_client_loses_its_connection(
    paho: PahoFactory, uid: str, topic: str
) -> None:
    watcher = paho(f"{uid}-watch")
    watcher.subscribe(f"{topic}/status", 1)
    device = paho(uid, will=(f"{topic}/status", b"offline", 1, False))
    device.abort()
    message = watcher.expect_message(3)
    assert (message.payload, message.qos) == (b"offline", 1)


def test_retained_will_is_stored_as_retained_message(
    paho: PahoFactory, raw: RawFactory, uid: str, topic: str
) -> None:
    device = raw()
    device.connect(
        uid, will_topic=f"{topic}/status", will_payload=b"gone", will_retain=True, will_qos=1
    )
    watcher = paho(f"{uid}-watch")
    watcher.subscribe(f"{topic}/status", 1)
    device.close()
    live = watcher.expect_message(3)
    assert live.payload == b"gone"
    late = paho(f"{uid}-late")
    late.subscribe(f"{topic}/status", 1)
    stored = late.expect_message()
    assert (stored.payload, stored.retain) == (b"gone", True)
    late.publish(f"{topic}/status", b"", 0, retain=True)


def test_v5_disconnect_with_will_message_0x04_publishes_the_will(
    paho: PahoFactory, raw: RawFactory, uid: str, topic: str
) -> None:
    watcher = paho(f"{uid}-watch", protocol=V5)
    watcher.subscribe(f"{topic}/will", 1)
    device = raw()
    device.connect(uid, proto_ver=5, will_topic=f"{topic}/will", will_payload=b"asked for")
    device.send(gen_disconnect(proto_ver=5, rc=0x04))  # 5.0 3.14.2.1
    device.expect_closed()
    assert watcher.expect_message(3).payload == b"asked for"


def test_v5_will_delay_is_cancelled_by_reconnect(
    paho: PahoFactory, raw: RawFactory, uid: str, topic: str
) -> None:
    watcher = paho(f"{uid}-watch", protocol=V5)
    watcher.subscribe(f"{topic}/will", 1)
    device = raw()
    # The session must outlive the connection, or its end publishes the will at once.
    device.connect(
        uid,
        proto_ver=5,
        will_topic=f"{topic}/will",
        will_payload=b"delayed",
        will_properties=prop_u32(WILL_DELAY_INTERVAL, 1),
        properties=prop_u32(SESSION_EXPIRY_INTERVAL, 30),
    )
    device.close()
    back = raw()
    # Resuming the session within the delay: no will [MQTT-3.1.3-9]. (A clean start would
    # end the old session, and that does publish it.)
    back.connect(uid, proto_ver=5, clean_session=False, session_present=True)
    watcher.expect_no_message(1.6)  # past the delay: it was cancelled, not late
    back.disconnect(proto_ver=5)


def test_v5_will_delay_publishes_after_the_interval(
    paho: PahoFactory, raw: RawFactory, uid: str, topic: str
) -> None:
    import time

    watcher = paho(f"{uid}-watch", protocol=V5)
    watcher.subscribe(f"{topic}/will", 1)
    device = raw()
    # The will delay only outlives the connection if the session does (5.0 3.1.3.2.2).
    device.connect(
        uid,
        proto_ver=5,
        will_topic=f"{topic}/will",
        will_payload=b"late",
        will_properties=prop_u32(WILL_DELAY_INTERVAL, 1),
        properties=prop_u32(SESSION_EXPIRY_INTERVAL, 30),
    )
    start = time.monotonic()
    device.close()
    assert watcher.expect_message(4).payload == b"late"
    assert time.monotonic() - start >= 0.9
    back = raw()  # end the session so nothing lingers
    back.connect(uid, proto_ver=5, clean_session=True, session_present=False)
    back.disconnect(proto_ver=5)


def test_will_of_a_taken_over_v311_client_is_published(
    paho: PahoFactory, raw: RawFactory, uid: str, topic: str
) -> None:
    watcher = paho(f"{uid}-watch")
    watcher.subscribe(f"{topic}/will", 1)
    first = raw()
    first.connect(uid, will_topic=f"{topic}/will", will_payload=b"taken over")
    second = raw()
    second.connect(uid)
    first.expect_closed(3)
    # The old network connection was closed without DISCONNECT [MQTT-3.1.2-8].
    assert watcher.expect_message(3).payload == b"taken over"
    second.disconnect()
