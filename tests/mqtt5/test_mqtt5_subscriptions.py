"""Subscription options (3.8.3.1), Subscription Identifiers (3.8.2.1.2, 3.3.4) and shared
subscriptions (4.8.2), with paho MQTTv5 (and MQTTv311 for shared subscriptions)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from integration.paho_client import V311, PahoClient
from mqtt_raw import (
    PUBLISH,
    REASON_STRING,
    RECEIVE_MAXIMUM,
    SESSION_EXPIRY_INTERVAL,
    SUBACK,
    RawClient,
    decode_properties,
    gen_subscribe,
    prop_u16,
    prop_u32,
)
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions
from support.v5 import V5Client, paho_props, props_of, wait_for

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import InProcessBroker


def options(qos: int = 1, **kw: bool | int) -> SubscribeOptions:
    return SubscribeOptions(qos=qos, **kw)  # type: ignore[arg-type]


def sub_id(value: int) -> object:
    return paho_props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=value)


def test_no_local_keeps_a_clients_own_messages_from_it(v5broker: InProcessBroker, uid: str) -> None:
    with (
        V5Client(v5broker.host, v5broker.port, f"{uid}-a") as a,
        V5Client(v5broker.host, v5broker.port, f"{uid}-b") as b,
    ):
        a.connect()
        b.connect()
        a.subscribe(f"{uid}/t", options=options(noLocal=True))
        a.publish(f"{uid}/t", b"mine", qos=1)
        b.publish(f"{uid}/t", b"theirs", qos=1)
        assert a.expect_message().payload == b"theirs"  # [MQTT-3.8.3-3]
        a.expect_no_message(0.2)


def test_retain_as_published_keeps_the_retain_flag_of_live_messages(
    v5broker: InProcessBroker, uid: str
) -> None:
    with (
        V5Client(v5broker.host, v5broker.port, f"{uid}-s") as sub,
        V5Client(v5broker.host, v5broker.port, f"{uid}-p") as pub,
    ):
        sub.connect()
        pub.connect()
        sub.subscribe(f"{uid}/rap", options=options(retainAsPublished=True))
        sub.subscribe(f"{uid}/plain", options=options())
        pub.publish(f"{uid}/rap", b"1", qos=1, retain=True)
        pub.publish(f"{uid}/plain", b"2", qos=1, retain=True)
        flags = {m.topic: m.retain for m in sub.expect_messages(2)}
        assert flags == {f"{uid}/rap": True, f"{uid}/plain": False}  # [MQTT-3.3.1-12/13]


def test_retain_handling_0_1_2(v5broker: InProcessBroker, uid: str) -> None:
    with V5Client(v5broker.host, v5broker.port, f"{uid}-p") as pub:
        pub.connect()
        pub.publish(f"{uid}/r", b"kept", qos=1, retain=True)
    with V5Client(v5broker.host, v5broker.port, f"{uid}-s") as sub:
        sub.connect()
        # 0: the retained message at every subscribe [MQTT-3.3.1-9].
        sub.subscribe(f"{uid}/r", options=options(retainHandling=0))
        assert sub.expect_message().retain
        sub.subscribe(f"{uid}/r", options=options(retainHandling=0))
        assert sub.expect_message().retain
        # 1: only when the subscription did not exist [MQTT-3.3.1-10].
        sub.subscribe(f"{uid}/+", options=options(retainHandling=1))
        assert sub.expect_message().retain
        sub.subscribe(f"{uid}/+", options=options(retainHandling=1))
        sub.expect_no_message(0.2)
        # 2: never [MQTT-3.3.1-11].
        sub.subscribe(f"{uid}/#", options=options(retainHandling=2))
        sub.expect_no_message(0.2)


def test_every_matching_subscription_identifier_comes_with_the_message(
    v5broker: InProcessBroker, uid: str
) -> None:
    with (
        V5Client(v5broker.host, v5broker.port, f"{uid}-s") as sub,
        V5Client(v5broker.host, v5broker.port, f"{uid}-p") as pub,
    ):
        sub.connect()
        pub.connect()
        sub.subscribe(f"{uid}/a/+", options=options(), properties=sub_id(7))
        sub.subscribe(f"{uid}/#", options=options(), properties=sub_id(300))
        sub.subscribe(f"{uid}/b", options=options())  # no identifier
        pub.publish(f"{uid}/a/x", b"both", qos=1)
        pub.publish(f"{uid}/b", b"one and none", qos=1)
        first, second = sub.expect_messages(2)
        # One PUBLISH carrying both identifiers (3.3.4), order not significant.
        assert sorted(props_of(first).SubscriptionIdentifier) == [7, 300]
        assert props_of(second).SubscriptionIdentifier == [300]


def test_subscribe_refusals_name_the_missing_feature(
    broker_with: Callable[..., InProcessBroker], uid: str
) -> None:
    broker = broker_with(
        subscription_identifier_available=False,
        wildcard_subscription_available=False,
        shared_subscription_available=False,
    )
    with V5Client(broker.host, broker.port, uid) as client:
        client.connect()
        assert client.subscribe(f"{uid}/a", options=options(), properties=sub_id(1)) == [0xA1]
        assert client.subscribe(f"{uid}/+", options=options()) == [0xA2]
        assert client.subscribe(f"$share/g/{uid}", options=options()) == [0x9E]
        assert client.subscribe(f"{uid}/ok", options=options()) == [1]
    with RawClient(broker.host, broker.port) as raw:  # paho refuses to send a bad filter
        raw.connect(f"{uid}-raw", proto_ver=5)
        raw.send(gen_subscribe(1, f"{uid}/#/x", 1, proto_ver=5))
        suback = raw.expect_type(SUBACK)
        assert suback.body[-1] == 0x8F
        assert decode_properties(suback.body, 2)[0][REASON_STRING] == ["topic filter invalid"]


# -- shared subscriptions ----------------------------------------------------------------------


def test_shared_subscription_gives_each_message_to_one_member_in_turn(
    v5broker: InProcessBroker, uid: str
) -> None:
    group = f"$share/g/{uid}/t"
    a = V5Client(v5broker.host, v5broker.port, f"{uid}-a")
    b = V5Client(v5broker.host, v5broker.port, f"{uid}-b")
    with a, b, V5Client(v5broker.host, v5broker.port, f"{uid}-p") as pub:
        for client in (a, b, pub):
            client.connect()
        a.subscribe(group, 1)
        b.subscribe(group, 1)
        for i in range(6):
            pub.publish(f"{uid}/t", str(i).encode(), qos=1)
        got_a = [m.payload for m in a.expect_messages(3)]
        got_b = [m.payload for m in b.expect_messages(3)]
        # Round robin: alternate members, nobody gets a message twice.
        assert sorted(got_a + got_b) == [str(i).encode() for i in range(6)]
        assert {got_a[0], got_b[0]} == {b"0", b"1"}
        a.expect_no_message(0.1)
        b.expect_no_message(0.1)


def test_no_retained_messages_on_a_shared_subscribe(v5broker: InProcessBroker, uid: str) -> None:
    with V5Client(v5broker.host, v5broker.port, f"{uid}-p") as pub:
        pub.connect()
        pub.publish(f"{uid}/t", b"retained", qos=1, retain=True)
    with V5Client(v5broker.host, v5broker.port, f"{uid}-s") as sub:
        sub.connect()
        sub.subscribe(f"$share/g/{uid}/t", 1)
        sub.expect_no_message(0.3)  # 4.8.2


def test_shared_subscriptions_work_for_mqtt_311_clients(
    v5broker: InProcessBroker, uid: str
) -> None:
    a = PahoClient(v5broker.host, v5broker.port, f"{uid}-a", protocol=V311)
    b = PahoClient(v5broker.host, v5broker.port, f"{uid}-b", protocol=V311)
    with a, b, PahoClient(v5broker.host, v5broker.port, f"{uid}-p", protocol=V311) as pub:
        for client in (a, b, pub):
            client.connect()
        assert a.subscribe(f"$share/g/{uid}/t", 1) == [1]
        assert b.subscribe(f"$share/g/{uid}/t", 1) == [1]
        for i in range(4):
            pub.publish(f"{uid}/t", str(i).encode(), qos=1)
        got = [m.payload for m in a.expect_messages(2)] + [m.payload for m in b.expect_messages(2)]
        assert sorted(got) == [b"0", b"1", b"2", b"3"]


def raw_member(
    broker: InProcessBroker, client_id: str, topic_filter: str, props: bytes = b""
) -> RawClient:
    """A shared-subscription member that never acknowledges anything."""
    client = RawClient(broker.host, broker.port)
    client.connect(client_id, proto_ver=5, properties=props)
    client.send(gen_subscribe(1, topic_filter, 2, proto_ver=5))
    client.expect_type(9)
    return client


def test_unacknowledged_qos1_and_queued_messages_go_to_another_member_when_one_leaves(
    v5broker: InProcessBroker, uid: str
) -> None:
    group = f"$share/g/{uid}/t"
    # a takes one message at a time (Receive Maximum 1) and never acknowledges it.
    a = raw_member(v5broker, f"{uid}-a", group, prop_u16(RECEIVE_MAXIMUM, 1))
    with (
        V5Client(v5broker.host, v5broker.port, f"{uid}-b") as b,
        V5Client(v5broker.host, v5broker.port, f"{uid}-p") as pub,
    ):
        b.connect()
        pub.connect()
        b.subscribe(group, 1)
        for i in range(4):
            pub.publish(f"{uid}/t", str(i).encode(), qos=1)
        held = a.expect_type(PUBLISH).publish(5)  # a's first; its second waits in a's queue
        first_b = [m.payload for m in b.expect_messages(2)]
        a.abort()  # a's session ends with the connection (clean start, no expiry)
        again = [m.payload for m in b.expect_messages(2)]
        assert held.payload in again  # the unacknowledged QoS 1 message [4.8.2]
        assert sorted(first_b + again) == [b"0", b"1", b"2", b"3"]
        b.expect_no_message(0.2)


def test_an_unfinished_qos2_message_never_goes_to_another_member(
    v5broker: InProcessBroker, uid: str
) -> None:
    group = f"$share/g/{uid}/t"
    a = raw_member(v5broker, f"{uid}-a", group)
    with (
        V5Client(v5broker.host, v5broker.port, f"{uid}-b") as b,
        V5Client(v5broker.host, v5broker.port, f"{uid}-p") as pub,
    ):
        b.connect()
        pub.connect()
        b.subscribe(group, 2)
        pub.publish(f"{uid}/t", b"0", qos=2)
        pub.publish(f"{uid}/t", b"1", qos=2)
        held = a.expect_type(PUBLISH).publish(5)
        (other,) = b.expect_messages(1)
        assert {held.payload, other.payload} == {b"0", b"1"}
        a.abort()
        b.expect_no_message(0.5)  # [MQTT-4.8.2-5]


def test_a_persistent_members_messages_wait_for_it_until_its_session_ends(
    v5broker: InProcessBroker, uid: str
) -> None:
    group = f"$share/g/{uid}/t"
    a = raw_member(v5broker, f"{uid}-a", group, prop_u32(SESSION_EXPIRY_INTERVAL, 1))
    with (
        V5Client(v5broker.host, v5broker.port, f"{uid}-b") as b,
        V5Client(v5broker.host, v5broker.port, f"{uid}-p") as pub,
    ):
        b.connect()
        pub.connect()
        b.subscribe(group, 1)
        pub.publish(f"{uid}/t", b"0", qos=1)
        pub.publish(f"{uid}/t", b"1", qos=1)
        held = a.expect_type(PUBLISH).publish(5)
        b.expect_messages(1)
        a.abort()
        # The session may come back (the Server MAY wait, 4.8.2) ...
        b.expect_no_message(0.4)
        # ... until it expires: then another member gets it.
        wait_for(lambda: v5broker.call(lambda: f"{uid}-a" not in v5broker.broker.sessions), 4)
        assert b.expect_message().payload == held.payload
