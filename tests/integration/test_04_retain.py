"""Retained messages: stored, delivered on subscribe with the retain flag, replaced, cleared."""

from __future__ import annotations

import pytest
from mqtt_raw import PUBLISH, gen_pingreq, gen_pingresp, gen_publish

from .conftest import PahoFactory, RawFactory
from .paho_client import V5, V311

pytestmark = pytest.mark.timeout(30)

VERSIONS = pytest.mark.parametrize("protocol", [V311, V5], ids=["v311", "v5"])


@VERSIONS
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_retained_message_is_delivered_on_subscribe_with_retain_flag(
    paho: PahoFactory, uid: str, topic: str, protocol: int, qos: int
) -> None:
    publisher = paho(f"{uid}-pub", protocol=protocol)
    publisher.subscribe(topic, 0)
    publisher.publish(topic, b"last known good", qos, retain=True)
    publisher.expect_message()  # the broker has routed (and stored) it
    subscriber = paho(f"{uid}-sub", protocol=protocol)
    subscriber.subscribe(topic, 2)
    message = subscriber.expect_message()
    # [MQTT-3.3.1-8]: sent because of a new subscription, so the retain flag is 1.
    assert (message.topic, message.payload, message.retain, message.qos) == (
        topic,
        b"last known good",
        True,
        qos,
    )
    publisher.publish(topic, b"", 0, retain=True)  # tidy the shared broker


@VERSIONS
def test_live_message_to_existing_subscriber_has_retain_flag_clear(
    paho: PahoFactory, uid: str, topic: str, protocol: int
) -> None:
    subscriber = paho(f"{uid}-sub", protocol=protocol)
    subscriber.subscribe(topic, 1)
    publisher = paho(f"{uid}-pub", protocol=protocol)
    publisher.publish(topic, b"live", 1, retain=True)
    message = subscriber.expect_message()
    # 3.1.1 [MQTT-3.3.1-9]; 5.0 the same unless Retain As Published was asked for.
    assert (message.payload, message.retain) == (b"live", False)
    publisher.publish(topic, b"", 0, retain=True)


@VERSIONS
def test_empty_retained_payload_clears_the_retained_message(
    paho: PahoFactory, uid: str, topic: str, protocol: int
) -> None:
    publisher = paho(f"{uid}-pub", protocol=protocol)
    publisher.publish(f"{topic}/gone", b"old", 1, retain=True)
    publisher.publish(f"{topic}/kept", b"kept", 1, retain=True)
    publisher.publish(f"{topic}/gone", b"", 1, retain=True)  # [MQTT-3.3.1-10]
    subscriber = paho(f"{uid}-sub", protocol=protocol)
    subscriber.subscribe(f"{topic}/#", 1)
    message = subscriber.expect_message()
    assert (message.topic, message.payload) == (f"{topic}/kept", b"kept")
    subscriber.expect_no_message(0.3)
    publisher.publish(f"{topic}/kept", b"", 0, retain=True)


def test_empty_retained_publish_still_reaches_current_subscribers(
    paho: PahoFactory, uid: str, topic: str
) -> None:
    subscriber = paho(f"{uid}-sub")
    subscriber.subscribe(topic, 1)
    publisher = paho(f"{uid}-pub")
    publisher.publish(topic, b"", 1, retain=True)
    message = subscriber.expect_message()
    assert (message.topic, message.payload) == (topic, b"")


def test_newer_retained_message_replaces_the_older(paho: PahoFactory, uid: str, topic: str) -> None:
    publisher = paho(f"{uid}-pub")
    for value in (b"1", b"2", b"3"):
        publisher.publish(topic, value, 1, retain=True)
    subscriber = paho(f"{uid}-sub")
    subscriber.subscribe(topic, 1)
    assert subscriber.expect_message().payload == b"3"
    subscriber.expect_no_message(0.3)
    publisher.publish(topic, b"", 0, retain=True)


def test_wildcard_subscription_receives_every_matching_retained_message(
    paho: PahoFactory, uid: str, topic: str
) -> None:
    publisher = paho(f"{uid}-pub")
    wanted = {f"{topic}/room{i}/temp": str(i).encode() for i in range(5)}
    for name, value in wanted.items():
        publisher.publish(name, value, 1, retain=True)
    publisher.publish(f"{topic}/room1/humidity", b"no", 1, retain=True)
    subscriber = paho(f"{uid}-sub")
    subscriber.subscribe(f"{topic}/+/temp", 1)
    got = {m.topic: m.payload for m in subscriber.expect_messages(5)}
    assert got == wanted
    subscriber.expect_no_message(0.3)
    for name in [*wanted, f"{topic}/room1/humidity"]:
        publisher.publish(name, b"", 0, retain=True)


def test_retained_message_is_delivered_at_the_subscription_qos(
    raw: RawFactory, uid: str, topic: str
) -> None:
    publisher = raw()
    publisher.connect(f"{uid}-pub")
    publisher.send(gen_publish(topic, qos=1, mid=1, retain=True, payload=b"r"))
    publisher.expect_type(4)
    subscriber = raw()
    subscriber.connect(f"{uid}-sub")
    subscriber.subscribe(1, topic, 0)
    # QoS 0 subscription: retained QoS 1 message comes as QoS 0, retain flag set; exact bytes.
    subscriber.expect_packet(gen_publish(topic, qos=0, retain=True, payload=b"r"), "PUBLISH")
    publisher.send(gen_publish(topic, retain=True))


def test_v5_retain_as_published_keeps_retain_flag_on_live_messages(
    paho: PahoFactory, uid: str, topic: str
) -> None:
    from paho.mqtt.subscribeoptions import SubscribeOptions

    subscriber = paho(f"{uid}-sub", protocol=V5)
    subscriber.subscribe(topic, options=SubscribeOptions(qos=1, retainAsPublished=True))
    publisher = paho(f"{uid}-pub", protocol=V5)
    publisher.publish(topic, b"rap", 1, retain=True)
    message = subscriber.expect_message()
    assert (message.payload, message.retain) == (b"rap", True)
    publisher.publish(topic, b"", 0, retain=True)


def test_v5_retain_handling_2_sends_no_retained_messages(
    paho: PahoFactory, uid: str, topic: str
) -> None:
    from paho.mqtt.subscribeoptions import SubscribeOptions

    publisher = paho(f"{uid}-pub", protocol=V5)
    publisher.publish(topic, b"stored", 1, retain=True)
    subscriber = paho(f"{uid}-sub", protocol=V5)
    subscriber.subscribe(
        topic, options=SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
    )
    publisher.publish(topic, b"live", 1)
    assert subscriber.expect_message().payload == b"live"
    publisher.publish(topic, b"", 0, retain=True)


def test_retained_message_from_raw_publisher_is_byte_exact_for_v311_subscriber(
    raw: RawFactory, uid: str, topic: str
) -> None:
    publisher = raw()
    publisher.connect(f"{uid}-pub")
    publisher.send(gen_publish(topic, retain=True, payload=b"\x00binary\xff") + gen_pingreq())
    publisher.expect_packet(gen_pingresp(), "PINGRESP")  # packets are handled in order
    subscriber = raw()
    subscriber.connect(f"{uid}-sub")
    subscriber.subscribe(1, topic, 0)
    packet = subscriber.expect_type(PUBLISH)
    assert packet.raw == gen_publish(topic, retain=True, payload=b"\x00binary\xff")
    publisher.send(gen_publish(topic, retain=True))
