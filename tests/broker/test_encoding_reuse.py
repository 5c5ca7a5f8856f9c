"""A 3.x PUBLISH is passed on as received (Message's `raw`): the bytes a subscriber gets
must be exactly those of a fresh encoding, with the subscriber's own packet id."""

from __future__ import annotations

import pytest
from support.core import Harness

from mqttd.protocol import Publish, Subscription, encode


def delivered_bytes(harness: Harness, sub_level: int, pub: Publish, sub_qos: int) -> bytes:
    sub = harness.connected("sub", level=sub_level)
    sub.subscribe(Subscription("a/b", sub_qos))
    sub.packets()
    start = len(sub.sink.buffer)
    harness.connected("pub", level=4).send(pub)
    return bytes(sub.sink.buffer[start:])


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("sub_level", [3, 4, 5])
def test_delivery_equals_a_fresh_encoding(harness: Harness, qos: int, sub_level: int) -> None:
    pub = Publish("a/b", b"payload", qos, False, False, 4242 if qos else None)
    got = delivered_bytes(harness, sub_level, pub, 2)
    want = Publish("a/b", b"payload", qos, False, False, 1 if qos else None)
    assert got == encode(want, sub_level)


def test_a_resent_publish_is_delivered_without_dup(harness: Harness) -> None:
    # DUP belongs to the publisher's hop [MQTT-3.3.1-3]: the first delivery has DUP 0.
    got = delivered_bytes(harness, 4, Publish("a/b", b"x", 1, False, True, 7), 1)
    assert got == encode(Publish("a/b", b"x", 1, False, False, 1), 4)


def test_a_retained_publish_reaches_live_subscribers_with_retain_0(harness: Harness) -> None:
    # [MQTT-3.3.1-9]: retain is 0 on a normal delivery, though the PUBLISH had it set.
    got = delivered_bytes(harness, 4, Publish("a/b", b"x", 1, True, False, 7), 1)
    assert got == encode(Publish("a/b", b"x", 1, False, False, 1), 4)


def test_a_lower_granted_qos_gets_its_own_encoding(harness: Harness) -> None:
    got = delivered_bytes(harness, 4, Publish("a/b", b"x", 2, False, False, 7), 1)
    assert got == encode(Publish("a/b", b"x", 1, False, False, 1), 4)
