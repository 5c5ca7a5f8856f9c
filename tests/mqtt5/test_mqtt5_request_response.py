"""Request/response (4.10) and the PUBLISH properties passed through unchanged (3.3.2.3):
Response Topic, Correlation Data, Content Type, Payload Format Indicator (validated,
3.3.2.3.2) and User Properties in order (3.3.2.3.7)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from mqtt_raw import (
    CONNACK,
    PAYLOAD_FORMAT_INDICATOR,
    PUBACK,
    PUBREC,
    REASON_STRING,
    RESPONSE_TOPIC,
    RawClient,
    decode_properties,
    gen_connect,
    gen_publish,
    prop_str,
    prop_u8,
)
from support.v5 import V5Client, props_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import InProcessBroker

USER_PROPERTIES = [("b", "1"), ("a", "2"), ("b", "3"), ("ключ", "значение")]


def test_publish_properties_reach_subscribers_unchanged_and_in_order(
    v5broker: InProcessBroker, uid: str
) -> None:
    with (
        V5Client(v5broker.host, v5broker.port, f"{uid}-s") as sub,
        V5Client(v5broker.host, v5broker.port, f"{uid}-p") as pub,
    ):
        sub.connect()
        pub.connect()
        sub.subscribe(f"{uid}/t", 1)
        pub.publish_v5(
            f"{uid}/t",
            "¡texto!".encode(),
            1,
            ResponseTopic=f"{uid}/reply",
            CorrelationData=b"\x00\x01req-42",
            ContentType="text/plain; charset=utf-8",
            PayloadFormatIndicator=1,
            UserProperty=USER_PROPERTIES,
        ).wait_for_publish(5)
        message = sub.expect_message()
        props = props_of(message)
        assert props.ResponseTopic == f"{uid}/reply"
        assert props.CorrelationData == b"\x00\x01req-42"
        assert props.ContentType == "text/plain; charset=utf-8"
        assert props.PayloadFormatIndicator == 1
        assert props.UserProperty == USER_PROPERTIES  # [MQTT-3.3.2-18]: order kept
        assert message.payload == "¡texto!".encode()


def test_request_response_round_trip_with_response_information(
    v5broker: InProcessBroker, uid: str
) -> None:
    requester = V5Client(
        v5broker.host,
        v5broker.port,
        f"{uid}-req",
        connect_properties={"RequestResponseInformation": 1},
    )
    with requester, V5Client(v5broker.host, v5broker.port, f"{uid}-srv") as server:
        result = requester.connect()
        reply_to = props_of(result).ResponseInformation + "/answer"
        server.connect()
        server.subscribe(f"{uid}/service", 1)
        requester.subscribe(reply_to, 1)
        requester.publish_v5(
            f"{uid}/service", b"2+2", 1, ResponseTopic=reply_to, CorrelationData=b"id-1"
        ).wait_for_publish(5)
        request = props_of(server.expect_message())
        server.publish_v5(
            request.ResponseTopic,
            b"4",
            1,
            CorrelationData=request.CorrelationData,
        ).wait_for_publish(5)
        answer = requester.expect_message()
        assert answer.topic == f"mqttd/response/{uid}-req/answer"
        assert answer.payload == b"4"
        assert props_of(answer).CorrelationData == b"id-1"


def marked_utf8(topic: str, qos: int, mid: int, payload: bytes) -> bytes:
    return gen_publish(
        topic,
        qos=qos,
        mid=mid,
        payload=payload,
        proto_ver=5,
        properties=prop_u8(PAYLOAD_FORMAT_INDICATOR, 1),
    )


@pytest.mark.parametrize(("qos", "ack"), [(1, PUBACK), (2, PUBREC)])
def test_payload_marked_utf8_that_is_not_gets_0x99(
    v5broker: InProcessBroker, uid: str, qos: int, ack: int
) -> None:
    with (
        V5Client(v5broker.host, v5broker.port, f"{uid}-s") as sub,
        RawClient(v5broker.host, v5broker.port) as client,
    ):
        sub.connect()
        sub.subscribe(f"{uid}/t", 2)
        client.connect(f"{uid}-p", proto_ver=5)
        client.send(marked_utf8(f"{uid}/t", qos, 5, b"\xc3\x28 not UTF-8"))
        refused = client.expect_type(ack)
        assert refused.mid() == 5 and refused.reason_code() == 0x99
        # The refused QoS 2 flow is over: the same id is a new message [MQTT-4.3.3-9].
        client.send(marked_utf8(f"{uid}/t", qos, 5, b"fine"))
        accepted = client.expect_type(ack)
        assert accepted.mid() == 5 and accepted.reason_code() == 0
        assert sub.expect_message().payload == b"fine"  # only the valid one went out
        sub.expect_no_message(0.2)


def test_qos0_payload_marked_utf8_that_is_not_gets_disconnect_0x99(
    v5broker: InProcessBroker, uid: str
) -> None:
    with RawClient(v5broker.host, v5broker.port) as client:
        client.connect(uid, proto_ver=5)
        client.send(marked_utf8(f"{uid}/t", 0, 0, b"\xed\xa0\x80"))  # a UTF-16 surrogate
        disconnect = client.expect_disconnect(0x99)
        assert REASON_STRING in disconnect.properties()


def test_unmarked_or_unvalidated_binary_payloads_pass(
    broker_with: Callable[..., InProcessBroker], uid: str
) -> None:
    broker = broker_with(validate_payload_format=False)
    with (
        V5Client(broker.host, broker.port, f"{uid}-s") as sub,
        RawClient(broker.host, broker.port) as client,
    ):
        sub.connect()
        sub.subscribe(f"{uid}/t", 1)
        client.connect(f"{uid}-p", proto_ver=5)
        client.send(marked_utf8(f"{uid}/t", 1, 1, b"\xff"))
        assert client.expect_type(PUBACK).reason_code() == 0
        message = sub.expect_message()
        assert message.payload == b"\xff"
        assert props_of(message).PayloadFormatIndicator == 1


def test_will_payload_marked_utf8_that_is_not_gets_connack_0x99(
    v5broker: InProcessBroker, uid: str
) -> None:
    with RawClient(v5broker.host, v5broker.port) as client:
        client.send(
            gen_connect(
                uid,
                proto_ver=5,
                will_topic=f"{uid}/will",
                will_payload=b"\xff",
                will_properties=prop_u8(PAYLOAD_FORMAT_INDICATOR, 1),
            )
        )
        connack = client.expect_type(CONNACK)
        assert connack.reason_code() == 0x99  # 3.1.3.2.3
        assert decode_properties(connack.body, 2)[0][REASON_STRING] == ["will payload is not UTF-8"]
        client.expect_closed()


def test_a_response_topic_with_a_wildcard_is_a_protocol_error(
    v5broker: InProcessBroker, uid: str
) -> None:
    with RawClient(v5broker.host, v5broker.port) as client:
        client.connect(uid, proto_ver=5)
        client.send(
            gen_publish(
                f"{uid}/t", payload=b"x", proto_ver=5, properties=prop_str(RESPONSE_TOPIC, "a/+")
            )
        )
        client.expect_disconnect(0x82)  # [MQTT-3.3.2-14]
    with RawClient(v5broker.host, v5broker.port) as client:
        client.send(
            gen_connect(
                uid,
                proto_ver=5,
                will_topic=f"{uid}/will",
                will_properties=prop_str(RESPONSE_TOPIC, "replies/#"),
            )
        )
        assert client.expect_type(CONNACK).reason_code() == 0x82
