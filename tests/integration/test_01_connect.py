"""CONNECT/CONNACK with every protocol version, client identifiers, and session takeover."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from mqtt_raw import (
    ASSIGNED_CLIENT_IDENTIFIER,
    CONNACK,
    DISCONNECT,
    SESSION_EXPIRY_INTERVAL,
    gen_connack,
    gen_connect,
    gen_disconnect,
    gen_pingreq,
    gen_pingresp,
    gen_publish,
    gen_suback,
    gen_subscribe,
    prop_u32,
)

from .conftest import PahoFactory, RawFactory
from .paho_client import V5, V31, V311

if TYPE_CHECKING:
    from conftest import MqttdProcess

pytestmark = pytest.mark.timeout(30)


def test_v311_connect_gets_connack_accepted_byte_exact(raw: RawFactory, uid: str) -> None:
    client = raw()
    client.send(gen_connect(uid))
    client.expect_packet(gen_connack(rc=0), "CONNACK")


def test_v31_mqisdp_connect_is_accepted(raw: RawFactory, uid: str) -> None:
    client = raw()
    client.send(gen_connect(uid[:23], proto_ver=3))  # 3.1 limits client ids to 23 bytes
    client.expect_packet(gen_connack(rc=0), "CONNACK")
    client.send(gen_pingreq())
    client.expect_packet(gen_pingresp(), "PINGRESP")


def test_v5_connect_gets_connack_success_with_decodable_properties(
    raw: RawFactory, uid: str
) -> None:
    client = raw()
    client.send(gen_connect(uid, proto_ver=5))
    connack = client.expect_type(CONNACK)
    assert connack.flags == 0
    assert connack.body[0] == 0, "session present must be 0 for a clean start"
    assert connack.reason_code() == 0
    connack.properties()  # raises if the property block is malformed


def test_paho_v31_round_trip(paho: PahoFactory, uid: str, topic: str) -> None:
    client = paho(uid[:23], protocol=V31)
    assert client.subscribe(topic, 1) == [1]
    client.publish(topic, b"hello 3.1", 1)
    message = client.expect_message()
    assert (message.topic, message.payload, message.qos) == (topic, b"hello 3.1", 1)


@pytest.mark.parametrize("protocol", [V311, V5], ids=["v311", "v5"])
def test_paho_connects_with_clean_session_and_no_session_present(
    paho: PahoFactory, uid: str, protocol: int
) -> None:
    result = paho(uid, protocol=protocol).connect_result
    assert result is not None
    assert result.reason_code == 0
    assert result.session_present is False


def test_v311_empty_client_id_with_clean_session_is_accepted(raw: RawFactory) -> None:
    client = raw()
    client.send(gen_connect("", clean_session=True))
    client.expect_packet(gen_connack(rc=0), "CONNACK")


def test_v5_empty_client_id_gets_assigned_client_identifier(raw: RawFactory) -> None:
    client = raw()
    client.send(gen_connect("", proto_ver=5))
    connack = client.expect_type(CONNACK)
    assert connack.reason_code() == 0
    assigned = connack.properties().get(ASSIGNED_CLIENT_IDENTIFIER)
    assert assigned, "5.0 CONNACK must carry the Assigned Client Identifier [MQTT-3.2.2-16]"
    assert isinstance(assigned[0], str) and assigned[0]


def test_v5_assigned_client_identifiers_are_unique(paho: PahoFactory) -> None:
    ids = set()
    for _ in range(3):
        result = paho("", protocol=V5).connect_result
        assert result is not None and result.properties is not None
        ids.add(getattr(result.properties, "AssignedClientIdentifier", None))
    assert None not in ids
    assert len(ids) == 3


def test_v5_empty_client_id_with_session_expiry_resumes_under_assigned_id(
    raw: RawFactory, topic: str
) -> None:
    first = raw()
    first.send(gen_connect("", proto_ver=5, properties=prop_u32(SESSION_EXPIRY_INTERVAL, 60)))
    connack = first.expect_type(CONNACK)
    assigned = connack.properties()[ASSIGNED_CLIENT_IDENTIFIER][0]
    assert isinstance(assigned, str)
    first.send(gen_disconnect(proto_ver=5))
    first.expect_closed()
    again = raw()
    again.connect(
        assigned,
        proto_ver=5,
        clean_session=False,
        session_present=True,
        properties=prop_u32(SESSION_EXPIRY_INTERVAL, 0),
    )


def test_connect_sent_one_byte_at_a_time_is_accepted(raw: RawFactory, uid: str) -> None:
    client = raw()
    for byte in gen_connect(uid, keepalive=30):
        client.send(bytes([byte]))
    client.expect_packet(gen_connack(rc=0), "CONNACK")


def test_connect_subscribe_and_publish_in_one_segment_are_all_handled(
    raw: RawFactory, uid: str, topic: str
) -> None:
    client = raw()
    client.send(
        gen_connect(uid)
        + gen_subscribe(1, topic, 0)
        + gen_publish(topic, payload=b"coalesced")
        + gen_pingreq()
    )
    client.expect_packet(gen_connack(rc=0), "CONNACK")
    client.expect_packet(gen_suback(1, 0), "SUBACK")
    client.expect_packet(gen_publish(topic, payload=b"coalesced"), "PUBLISH")
    client.expect_packet(gen_pingresp(), "PINGRESP")


def test_disconnect_makes_the_broker_close_the_connection(raw: RawFactory, uid: str) -> None:
    client = raw()
    client.connect(uid)
    client.send(gen_disconnect())
    assert client.expect_closed(3) == []


def test_v311_takeover_closes_the_first_connection(
    paho: PahoFactory, raw: RawFactory, uid: str, topic: str
) -> None:
    first = raw()
    first.connect(uid)
    second = paho(uid, protocol=V311)
    # [MQTT-3.1.4-2]: the existing client is disconnected; 3.1.1 has no DISCONNECT to send.
    assert first.expect_closed(3) == []
    assert second.subscribe(topic, 1) == [1]
    second.publish(topic, b"still here", 1)
    assert second.expect_message().payload == b"still here"
    assert not second.disconnected.is_set()


def test_v5_takeover_sends_session_taken_over_0x8e(paho: PahoFactory, uid: str) -> None:
    first = paho(uid, protocol=V5)
    second = paho(uid, protocol=V5)
    assert first.wait_disconnected(3) == 0x8E
    assert second.connect_result is not None and second.connect_result.reason_code == 0
    assert not second.disconnected.is_set()


def test_v5_takeover_of_raw_client_sends_disconnect_0x8e_then_closes(
    raw: RawFactory, paho: PahoFactory, uid: str
) -> None:
    first = raw()
    first.connect(uid, proto_ver=5)
    paho(uid, protocol=V5)
    first.expect_disconnect(0x8E, 3)


def test_takeover_across_protocol_versions(raw: RawFactory, uid: str) -> None:
    first = raw()
    first.connect(uid, proto_ver=5)
    second = raw()
    second.connect(uid, proto_ver=4)
    packets = first.expect_closed(3, allow=[DISCONNECT])
    if packets:
        assert packets[0].reason_code() == 0x8E
    second.send(gen_pingreq())
    second.expect_packet(gen_pingresp(), "PINGRESP")


def test_many_clients_connect_concurrently(server: MqttdProcess, raw: RawFactory, uid: str) -> None:
    clients = [raw() for _ in range(50)]
    for i, client in enumerate(clients):
        client.send(gen_connect(f"{uid}-{i}"))
    for client in clients:
        client.expect_packet(gen_connack(rc=0), "CONNACK")
