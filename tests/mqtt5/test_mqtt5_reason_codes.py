"""Reason codes the server sends (5.0 2.4, 4.13): server DISCONNECTs and acknowledgements."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mqtt_raw import (
    PUBACK,
    PUBCOMP,
    PUBREC,
    PUBREL,
    REASON_STRING,
    SUBACK,
    RawClient,
    decode_properties,
    gen_publish,
    gen_pubrec,
    gen_pubrel,
    gen_subscribe,
)
from support.v5 import V5Client

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import InProcessBroker, InProcessFactory


def test_subscription_quota_is_suback_0x97(
    broker_with: Callable[..., InProcessBroker], uid: str
) -> None:
    broker = broker_with(max_subscriptions_per_client=1)
    with V5Client(broker.host, broker.port, uid) as client:
        client.connect()
        assert client.subscribe(f"{uid}/a", 1) == [1]
        assert client.subscribe(f"{uid}/b", 1) == [0x97]


def test_publish_acks_say_no_matching_subscribers(v5broker: InProcessBroker, uid: str) -> None:
    with RawClient(v5broker.host, v5broker.port) as client:
        client.connect(uid, proto_ver=5)
        client.send(gen_publish(f"{uid}/nobody", qos=1, mid=1, payload=b"x", proto_ver=5))
        assert client.expect_type(PUBACK).reason_code() == 0x10
        client.send(gen_publish(f"{uid}/nobody", qos=2, mid=2, payload=b"x", proto_ver=5))
        assert client.expect_type(PUBREC).reason_code() == 0x10


def test_packet_identifier_in_use_and_not_found(v5broker: InProcessBroker, uid: str) -> None:
    with RawClient(v5broker.host, v5broker.port) as client:
        client.connect(uid, proto_ver=5)
        client.send(gen_publish(f"{uid}/t", qos=2, mid=5, payload=b"x", proto_ver=5))
        assert client.expect_type(PUBREC).mid() == 5
        client.send(gen_publish(f"{uid}/t", qos=1, mid=5, payload=b"y", proto_ver=5))
        in_use = client.expect_type(PUBACK)
        assert in_use.reason_code() == 0x91
        assert decode_properties(in_use.body, 3)[0][REASON_STRING]  # problem information
        client.send(gen_pubrel(77, proto_ver=5))
        assert client.expect_type(PUBCOMP).reason_code() == 0x92
        client.send(gen_pubrec(78, proto_ver=5))
        assert client.expect_type(PUBREL).reason_code() == 0x92


def test_publish_refused_by_the_acl_is_0x87(broker_factory: InProcessFactory, uid: str) -> None:
    broker = broker_factory()

    def authorise(client_id: str, username: str | None, action: str, topic: str) -> bool:
        return not topic.startswith(f"{uid}/secret")

    broker.call(lambda: setattr(broker.broker, "authorise", authorise))
    with RawClient(broker.host, broker.port) as client:
        client.connect(uid, proto_ver=5)
        client.send(gen_publish(f"{uid}/secret/x", qos=1, mid=1, payload=b"x", proto_ver=5))
        refused = client.expect_type(PUBACK)
        assert refused.reason_code() == 0x87
        assert decode_properties(refused.body, 3)[0][REASON_STRING] == ["not authorized"]
        client.send(gen_subscribe(2, f"{uid}/open", 1, proto_ver=5))
        assert client.expect_type(SUBACK).body[-1] == 1
