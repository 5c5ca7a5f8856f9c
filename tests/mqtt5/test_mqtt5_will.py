"""Will Delay Interval (3.1.3.2.2) and DISCONNECT 0x04 (3.14.2.1), paho MQTTv5, real time."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from mqtt_raw import RawClient, gen_disconnect
from support.v5 import V5Client

if TYPE_CHECKING:
    from conftest import InProcessBroker


def watcher(broker: InProcessBroker, uid: str) -> V5Client:
    client = V5Client(broker.host, broker.port, f"{uid}-watch")
    client.connect()
    client.subscribe(f"{uid}/will", 1)
    return client


def will_client(
    broker: InProcessBroker, uid: str, delay: int, expiry: int, client_id: str = ""
) -> V5Client:
    client = V5Client(
        broker.host, broker.port, client_id or f"{uid}-dev", clean=False, session_expiry=expiry
    )
    client.will_set(f"{uid}/will", b"gone", 1, WillDelayInterval=delay)
    client.connect()
    return client


def test_will_goes_out_after_the_delay(v5broker: InProcessBroker, uid: str) -> None:
    with watcher(v5broker, uid) as watch:
        device = will_client(v5broker, uid, delay=1, expiry=60)
        device.abort()
        started = time.monotonic()
        watch.expect_no_message(0.6)
        message = watch.expect_message(3.0)
        assert message.payload == b"gone"
        assert 0.8 < time.monotonic() - started < 2.5


def test_will_goes_out_when_the_session_ends_first(v5broker: InProcessBroker, uid: str) -> None:
    with watcher(v5broker, uid) as watch:
        device = will_client(v5broker, uid, delay=60, expiry=1)
        device.abort()
        started = time.monotonic()
        assert watch.expect_message(3.0).payload == b"gone"  # [MQTT-3.1.3-9]: whichever first
        assert time.monotonic() - started < 2.5


def test_will_goes_out_at_once_when_the_session_ends_with_the_connection(
    v5broker: InProcessBroker, uid: str
) -> None:
    with watcher(v5broker, uid) as watch:
        device = will_client(v5broker, uid, delay=30, expiry=0)
        device.abort()
        assert watch.expect_message(1.0).payload == b"gone"


def test_no_will_when_the_client_is_back_in_time(v5broker: InProcessBroker, uid: str) -> None:
    with watcher(v5broker, uid) as watch:
        device = will_client(v5broker, uid, delay=1, expiry=60)
        device.abort()
        back = will_client(v5broker, uid, delay=1, expiry=60)  # a new connection cancels it
        watch.expect_no_message(1.6)  # [MQTT-3.1.3-9]
        back.disconnect()
        watch.expect_no_message(0.2)  # a normal DISCONNECT deletes the new one


def test_disconnect_with_will_message_sends_the_will(v5broker: InProcessBroker, uid: str) -> None:
    with watcher(v5broker, uid) as watch, RawClient(v5broker.host, v5broker.port) as client:
        client.connect(f"{uid}-dev", proto_ver=5, will_topic=f"{uid}/will", will_payload=b"asked")
        client.send(gen_disconnect(proto_ver=5, rc=0x04))
        client.expect_closed()
        assert watch.expect_message().payload == b"asked"


def test_normal_disconnect_deletes_the_will(v5broker: InProcessBroker, uid: str) -> None:
    with watcher(v5broker, uid) as watch, RawClient(v5broker.host, v5broker.port) as client:
        client.connect(f"{uid}-dev", proto_ver=5, will_topic=f"{uid}/will", will_payload=b"no")
        client.send(gen_disconnect(proto_ver=5, rc=0x00))
        client.expect_closed()
        watch.expect_no_message(0.3)  # [MQTT-3.14.4-3]


def test_takeover_publishes_an_undelayed_will_and_cancels_a_delayed_one(
    v5broker: InProcessBroker, uid: str
) -> None:
    with watcher(v5broker, uid) as watch:
        will_client(v5broker, uid, delay=0, expiry=60, client_id=f"{uid}-a")
        new_a = will_client(v5broker, uid, delay=0, expiry=60, client_id=f"{uid}-a")
        assert watch.expect_message().payload == b"gone"
        will_client(v5broker, uid, delay=1, expiry=60, client_id=f"{uid}-b")
        new_b = will_client(v5broker, uid, delay=1, expiry=60, client_id=f"{uid}-b")
        watch.expect_no_message(1.5)  # a new connection within the delay [MQTT-3.1.2-8]
        new_a.disconnect()
        new_b.disconnect()
