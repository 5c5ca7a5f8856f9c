"""Subscribe and publish with paho: QoS round trips, wildcards, $-topics, unsubscribe."""

from __future__ import annotations

import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions

from .conftest import PahoFactory
from .paho_client import V5, V311

pytestmark = pytest.mark.timeout(30)

VERSIONS = pytest.mark.parametrize("protocol", [V311, V5], ids=["v311", "v5"])


@VERSIONS
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_round_trip_between_two_paho_clients(
    paho: PahoFactory, uid: str, topic: str, protocol: int, qos: int
) -> None:
    subscriber = paho(f"{uid}-sub", protocol=protocol)
    publisher = paho(f"{uid}-pub", protocol=protocol)
    assert subscriber.subscribe(f"{topic}/data", 2) == [2]
    publisher.publish(f"{topic}/data", b"payload \x00\xff", qos)
    message = subscriber.expect_message()
    assert (message.topic, message.payload, message.qos, message.retain) == (
        f"{topic}/data",
        b"payload \x00\xff",
        qos,
        False,
    )
    subscriber.expect_no_message(0.2)


@VERSIONS
def test_client_receives_its_own_publish(
    paho: PahoFactory, uid: str, topic: str, protocol: int
) -> None:
    client = paho(uid, protocol=protocol)
    client.subscribe(topic, 1)
    client.publish(topic, b"echo", 1)
    assert client.expect_message().payload == b"echo"


@pytest.mark.parametrize(
    ("sub_qos", "pub_qos", "delivered"), [(0, 2, 0), (1, 2, 1), (1, 0, 0), (2, 1, 1)]
)
def test_delivered_qos_is_the_minimum_of_publish_and_subscription(
    paho: PahoFactory, uid: str, topic: str, sub_qos: int, pub_qos: int, delivered: int
) -> None:
    subscriber = paho(f"{uid}-sub")
    publisher = paho(f"{uid}-pub")
    assert subscriber.subscribe(topic, sub_qos) == [sub_qos]
    publisher.publish(topic, b"x", pub_qos)
    assert subscriber.expect_message().qos == delivered


def _topics_received(client_messages: list[str], prefix: str) -> set[str]:
    return {t.removeprefix(prefix) for t in client_messages}


def test_single_level_wildcard_matches_exactly_one_level(
    paho: PahoFactory, uid: str, topic: str
) -> None:
    subscriber = paho(f"{uid}-sub")
    publisher = paho(f"{uid}-pub")
    subscriber.subscribe(f"{topic}/+/temp", 1)
    subscriber.subscribe(f"{topic}/edge/+", 1)
    for suffix in ["/a/temp", "/b/temp", "/a/b/temp", "/temp", "/a/temp/x", "//temp", "/edge/"]:
        publisher.publish(topic + suffix, b"", 1)
    publisher.publish(f"{topic}/end/temp", b"", 1)  # marker: delivered last
    got: list[str] = []
    while not got or got[-1] != f"{topic}/end/temp":
        got.append(subscriber.expect_message().topic)
    # "+" matches an empty level too ("//temp", "/edge/") [MQTT-4.7.1-3].
    assert _topics_received(got, topic) == {"/a/temp", "/b/temp", "//temp", "/edge/", "/end/temp"}


def test_multi_level_wildcard_matches_parent_and_all_children(
    paho: PahoFactory, uid: str, topic: str
) -> None:
    subscriber = paho(f"{uid}-sub")
    publisher = paho(f"{uid}-pub")
    subscriber.subscribe(f"{topic}/home/#", 1)
    for suffix in ["/home", "/home/", "/home/kitchen", "/home/kitchen/temp", "/homework", "/other"]:
        publisher.publish(topic + suffix, b"", 1)
    publisher.publish(f"{topic}/home/zz-end", b"", 1)
    got: list[str] = []
    while not got or got[-1] != f"{topic}/home/zz-end":
        got.append(subscriber.expect_message().topic)
    # "sport/#" also matches "sport", the parent level [MQTT-4.7.1-2].
    assert _topics_received(got, topic) == {
        "/home",
        "/home/",
        "/home/kitchen",
        "/home/kitchen/temp",
        "/home/zz-end",
    }


def test_dollar_topics_are_not_matched_by_leading_wildcards(paho: PahoFactory, uid: str) -> None:
    wildcard = paho(f"{uid}-wild")
    exact = paho(f"{uid}-exact")
    publisher = paho(f"{uid}-pub")
    wildcard.subscribe("#", 0)
    wildcard.subscribe(f"+/{uid}/x", 0)
    exact.subscribe(f"$mqttd-test/{uid}/x", 0)
    # Retained messages of earlier tests may arrive on "#"; they are not $-topics either.
    publisher.publish(f"$mqttd-test/{uid}/x", b"dollar", 1)
    assert exact.expect_message().payload == b"dollar"  # the $-topic itself is routed
    publisher.publish(f"plain/{uid}/x", b"marker", 1)
    seen = []
    while True:
        message = wildcard.expect_message()
        seen.append(message.topic)
        if message.payload == b"marker":
            break
    # [MQTT-4.7.2-1]: "#" and "+/..." never match topic names starting with "$".
    assert not [t for t in seen if t.startswith("$")], seen


def test_unsubscribe_stops_delivery(paho: PahoFactory, uid: str, topic: str) -> None:
    subscriber = paho(f"{uid}-sub")
    publisher = paho(f"{uid}-pub")
    subscriber.subscribe(f"{topic}/a", 1)
    subscriber.subscribe(f"{topic}/b", 1)
    publisher.publish(f"{topic}/a", b"1", 1)
    assert subscriber.expect_message().payload == b"1"
    subscriber.unsubscribe(f"{topic}/a")
    publisher.publish(f"{topic}/a", b"2", 1)
    publisher.publish(f"{topic}/b", b"3", 1)
    # Only the still-subscribed topic arrives; "2" would have come first if at all.
    message = subscriber.expect_message()
    assert (message.topic, message.payload) == (f"{topic}/b", b"3")


def test_resubscribe_replaces_the_subscription_qos(paho: PahoFactory, uid: str, topic: str) -> None:
    subscriber = paho(f"{uid}-sub")
    publisher = paho(f"{uid}-pub")
    subscriber.subscribe(topic, 2)
    subscriber.subscribe(topic, 0)  # [MQTT-3.8.4-3]: replaces, does not add a second copy
    publisher.publish(topic, b"once", 2)
    message = subscriber.expect_message()
    assert (message.payload, message.qos) == (b"once", 0)
    subscriber.expect_no_message(0.3)


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_messages_from_one_publisher_arrive_in_order(
    paho: PahoFactory, uid: str, topic: str, qos: int
) -> None:
    subscriber = paho(f"{uid}-sub")
    publisher = paho(f"{uid}-pub")
    subscriber.subscribe(topic, qos)
    infos = [publisher.client.publish(topic, str(i).encode(), qos) for i in range(50)]
    for info in infos:
        info.wait_for_publish(5)
    got = [m.payload for m in subscriber.expect_messages(50)]
    assert got == [str(i).encode() for i in range(50)]  # [MQTT-4.6.0-6] ordered topic


def test_large_payload_round_trip(paho: PahoFactory, uid: str, topic: str) -> None:
    subscriber = paho(f"{uid}-sub")
    publisher = paho(f"{uid}-pub")
    subscriber.subscribe(topic, 1)
    payload = bytes(range(256)) * 1024  # 256 KiB: many TCP segments, 3-byte remaining length
    publisher.publish(topic, payload, 1)
    assert subscriber.expect_message().payload == payload


def test_v5_no_local_subscription_does_not_echo_own_messages(
    paho: PahoFactory, uid: str, topic: str
) -> None:
    client = paho(uid, protocol=V5)
    other = paho(f"{uid}-other", protocol=V5)
    client.subscribe(topic, options=SubscribeOptions(qos=1, noLocal=True))
    client.publish(topic, b"mine", 1)
    other.publish(topic, b"theirs", 1)
    assert client.expect_message().payload == b"theirs"
    client.expect_no_message(0.2)


def test_v311_and_v5_clients_exchange_messages(paho: PahoFactory, uid: str, topic: str) -> None:
    old = paho(f"{uid}-311", protocol=V311)
    new = paho(f"{uid}-5", protocol=V5)
    old.subscribe(f"{topic}/to311", 1)
    new.subscribe(f"{topic}/to5", 1)
    new.publish(f"{topic}/to311", b"from 5", 1)
    old.publish(f"{topic}/to5", b"from 3.1.1", 1)
    assert old.expect_message().payload == b"from 5"
    assert new.expect_message().payload == b"from 3.1.1"
