"""CONNECT and CONNACK in 5.0: what the server advertises, assigns and overrides (3.2.2.3),
and the client's Request Problem / Response Information (3.1.2.11.6, 3.1.2.11.7)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
from mqtt_raw import (
    CONNACK,
    PAYLOAD_FORMAT_INDICATOR,
    PUBACK,
    REASON_STRING,
    RawClient,
    gen_publish,
    prop_u8,
    prop_u32,
)
from support.v5 import V5Client, props_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import InProcessBroker

REQUEST_PROBLEM_INFORMATION = 0x17
MAXIMUM_PACKET_SIZE = 0x27


def connack_of(broker: InProcessBroker, client_id: str, **kw: Any) -> dict[str, Any]:
    """The CONNACK properties paho saw (paho's names)."""
    with V5Client(broker.host, broker.port, client_id, **kw) as client:
        return dict(props_of(client.connect()).json())


def test_connack_advertises_the_default_features(v5broker: InProcessBroker, uid: str) -> None:
    props = connack_of(v5broker, uid)
    assert props["RetainAvailable"] == 1
    assert props["WildcardSubscriptionAvailable"] == 1
    assert props["SubscriptionIdentifierAvailable"] == 1
    assert props["SharedSubscriptionAvailable"] == 1
    assert props["TopicAliasMaximum"] == 10
    assert props["MaximumPacketSize"] == 268_435_455
    # Absent means the most: QoS 2 (3.2.2.3.4), Receive Maximum 65535 (3.2.2.3.3).
    assert "MaximumQoS" not in props and "ReceiveMaximum" not in props
    assert "AssignedClientIdentifier" not in props and "ServerKeepAlive" not in props
    assert "ResponseInformation" not in props  # not asked for [MQTT-3.1.2-28]


def test_connack_advertises_configured_limits(
    broker_with: Callable[..., InProcessBroker], uid: str
) -> None:
    broker = broker_with(
        maximum_qos=1,
        retain_available=False,
        receive_maximum=5,
        topic_alias_maximum=0,
        max_packet_size=1000,
        wildcard_subscription_available=False,
        subscription_identifier_available=False,
        shared_subscription_available=False,
    )
    props = connack_of(broker, uid)
    assert props["MaximumQoS"] == 1
    assert props["RetainAvailable"] == 0
    assert props["ReceiveMaximum"] == 5
    assert "TopicAliasMaximum" not in props  # 0 = none accepted (3.2.2.3.8)
    assert props["MaximumPacketSize"] == 1000
    assert props["WildcardSubscriptionAvailable"] == 0
    assert props["SubscriptionIdentifierAvailable"] == 0
    assert props["SharedSubscriptionAvailable"] == 0


@pytest.mark.parametrize(("asked", "granted"), [(60, 5), (0, 5), (3, None)])
def test_server_keep_alive_overrides_what_is_above_our_maximum(
    broker_with: Callable[..., InProcessBroker], uid: str, asked: int, granted: int | None
) -> None:
    broker = broker_with(max_keepalive=5)
    props = connack_of(broker, uid, keepalive=asked)
    assert props.get("ServerKeepAlive") == granted  # 3.2.2.3.14


def test_the_server_keep_alive_is_the_one_enforced(
    broker_with: Callable[..., InProcessBroker], uid: str
) -> None:
    broker = broker_with(max_keepalive=1)
    with RawClient(broker.host, broker.port) as client:
        client.connect(uid, proto_ver=5, keepalive=60)
        started = time.monotonic()
        client.expect_disconnect(0x8D, timeout=5.0)  # silent for 1.5 x 1 s [MQTT-3.1.2-22]
        assert 1.2 < time.monotonic() - started < 4.0


def test_response_information_when_requested(v5broker: InProcessBroker, uid: str) -> None:
    props = connack_of(v5broker, uid, connect_properties={"RequestResponseInformation": 1})
    assert props["ResponseInformation"] == f"mqttd/response/{uid}"
    none = connack_of(v5broker, uid, connect_properties={"RequestResponseInformation": 0})
    assert "ResponseInformation" not in none  # [MQTT-3.1.2-28]


def test_response_information_is_configurable_and_can_be_off(
    broker_with: Callable[..., InProcessBroker], uid: str
) -> None:
    broker = broker_with(response_information="replies/{client_id}/")
    props = connack_of(broker, uid, connect_properties={"RequestResponseInformation": 1})
    assert props["ResponseInformation"] == f"replies/{uid}/"
    off = broker_with(response_information="")
    props = connack_of(off, uid, connect_properties={"RequestResponseInformation": 1})
    assert "ResponseInformation" not in props


def test_session_expiry_above_our_maximum_is_lowered_in_connack(
    broker_with: Callable[..., InProcessBroker], uid: str
) -> None:
    broker = broker_with(max_session_expiry_interval=10)
    props = connack_of(broker, uid, session_expiry=100, clean=True)
    assert props["SessionExpiryInterval"] == 10  # 3.2.2.3.2
    assert connack_of(broker, uid, session_expiry=5).get("SessionExpiryInterval") is None


# -- Request Problem Information (3.1.2.11.7) -------------------------------------------------


def bad_utf8_puback(client: RawClient, connect_props: bytes, uid: str) -> dict[int, Any]:
    client.connect(uid, proto_ver=5, properties=connect_props)
    client.send(
        gen_publish(
            f"{uid}/t",
            qos=1,
            mid=7,
            payload=b"\xff\xfe",
            proto_ver=5,
            properties=prop_u8(PAYLOAD_FORMAT_INDICATOR, 1),
        )
    )
    puback = client.expect_type(PUBACK)
    assert puback.reason_code() == 0x99
    from mqtt_raw import decode_properties

    return decode_properties(puback.body, 3)[0] if len(puback.body) > 3 else {}


def test_reason_string_on_an_error_ack_by_default(v5broker: InProcessBroker, uid: str) -> None:
    with RawClient(v5broker.host, v5broker.port) as client:
        props = bad_utf8_puback(client, b"", uid)
    assert props[REASON_STRING] == ["payload is not valid UTF-8 (Payload Format Indicator 1)"]


def test_no_reason_string_on_acks_when_problem_information_is_0(
    v5broker: InProcessBroker, uid: str
) -> None:
    with RawClient(v5broker.host, v5broker.port) as client:
        props = bad_utf8_puback(client, prop_u8(REQUEST_PROBLEM_INFORMATION, 0), uid)
        assert props == {}  # [MQTT-3.1.2-29]
        # ...but DISCONNECT may still carry one (3.1.2.11.7).
        client.send(bytes((0xC0, 0, 0xC0, 0)) + b"\x30\x00")  # a malformed PUBLISH
        while True:
            packet = client.read_packet()
            assert packet is not None
            if packet.type == 14:
                break
        assert packet.reason_code() == 0x81
        assert REASON_STRING in packet.properties()


def test_reason_string_is_left_out_when_it_would_exceed_the_clients_maximum(
    v5broker: InProcessBroker, uid: str
) -> None:
    with RawClient(v5broker.host, v5broker.port) as client:
        props = bad_utf8_puback(client, prop_u32(MAXIMUM_PACKET_SIZE, 20), uid)
    assert props == {}  # [MQTT-3.4.2-2]: the packet goes, without the Reason String


def test_refusing_connack_says_why(broker_with: Callable[..., InProcessBroker], uid: str) -> None:
    broker = broker_with(maximum_qos=1)
    with RawClient(broker.host, broker.port) as client:
        from mqtt_raw import gen_connect

        client.send(gen_connect(uid, proto_ver=5, will_topic="w", will_qos=2))
        connack = client.expect_type(CONNACK)
        assert connack.reason_code() == 0x9B
        assert connack.properties()[REASON_STRING] == ["will QoS above Maximum QoS"]
