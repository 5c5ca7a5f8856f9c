"""CONNECT handling: protocol checks, client ids, authentication, CONNACK, takeover."""

from __future__ import annotations

from typing import Any

from support.core import Harness

from mqttd.auth.hooks import AuthResult, ConnectInfo
from mqttd.protocol import (
    Connack,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    Properties,
    Publish,
    ReasonCode,
    Will,
    encode,
)


def test_3_1_1_client_is_accepted(harness: Harness) -> None:
    client = harness.client(4)
    connack = client.connect("c1")
    assert connack == Connack(False, 0)
    assert harness.broker.stats.clients_connected == 1


def test_3_1_client_with_mqisdp_is_accepted(harness: Harness) -> None:
    client = harness.client(3)
    assert client.connect("c31").reason_code == 0
    client.send(PingReq())
    assert isinstance(client.expect(PingResp), PingResp)


def test_unsupported_protocol_level_gets_connack_0x01_in_3x_format(harness: Harness) -> None:
    client = harness.client(4)
    data = bytearray(encode(Connect("c", 4), 4))
    level_at = data.index(b"MQTT") + 4
    data[level_at] = 6
    client.send_bytes(bytes(data))
    assert bytes(client.sink.buffer) == b"\x20\x02\x00\x01"
    assert client.closed


def test_first_packet_must_be_connect(harness: Harness) -> None:
    client = harness.client(4)
    client.send(PingReq())
    assert client.closed
    assert client.sink.buffer == b""


def test_second_connect_closes_a_3x_connection_silently(harness: Harness) -> None:
    client = harness.connected("c", level=4)
    client.send(Connect("c", 4))
    assert client.closed
    assert client.packets() == []


def test_second_connect_gets_disconnect_0x82_in_5(harness: Harness) -> None:
    client = harness.connected("c", level=5)
    client.send(Connect("c", 5))
    disconnect = client.expect(Disconnect)
    assert disconnect.reason_code == ReasonCode.PROTOCOL_ERROR
    assert disconnect.properties is not None
    assert disconnect.properties.reason_string == "second CONNECT [MQTT-3.1.0-2]"
    assert client.closed


def test_socket_without_connect_is_closed_after_connect_timeout(make_harness: Any) -> None:
    harness = make_harness(connect_timeout=5.0)
    client = harness.client(4)
    harness.advance(4.9)
    assert not client.closed
    harness.advance(0.2)
    assert client.closed
    assert harness.broker.connections == frozenset()


def test_connect_timeout_does_not_touch_a_connected_client(make_harness: Any) -> None:
    harness = make_harness(connect_timeout=5.0)
    client = harness.connected("c")
    harness.advance(10)
    assert not client.closed


def test_empty_client_id_with_clean_session_gets_an_assigned_id(harness: Harness) -> None:
    client = harness.client(4)
    assert client.connect("", clean_start=True).reason_code == 0
    (client_id,) = harness.broker.sessions
    assert client_id.startswith("mqttd-")


def test_5_empty_client_id_is_assigned_in_connack_and_names_the_session(
    harness: Harness,
) -> None:
    connack = harness.client(5).connect("")
    assert connack.reason_code == 0 and connack.properties is not None
    assigned = connack.properties.assigned_client_identifier
    assert assigned is not None and assigned.startswith("mqttd-")  # [MQTT-3.2.2-16]
    assert list(harness.broker.sessions) == [assigned]


def test_empty_client_id_with_clean_session_0_is_refused_with_0x02(harness: Harness) -> None:
    client = harness.client(4)
    connack = client.connect("", clean_start=False)
    assert connack == Connack(False, 0x02)
    assert client.closed


def test_empty_client_id_is_refused_in_3_1(harness: Harness) -> None:
    client = harness.client(3)
    assert client.connect("").reason_code == 0x02


def test_5_assigned_client_identifier_is_reported_in_connack(harness: Harness) -> None:
    client = harness.client(5)
    connack = client.connect("", clean_start=False)
    assert connack.reason_code == 0
    assert connack.properties is not None
    assigned = connack.properties.assigned_client_identifier
    assert assigned is not None and assigned in harness.broker.sessions


def test_empty_client_id_refused_when_not_allowed(make_harness: Any) -> None:
    harness = make_harness(allow_zero_length_client_id=False)
    client = harness.client(5)
    assert client.connect("").reason_code == ReasonCode.CLIENT_IDENTIFIER_NOT_VALID


def test_too_long_client_id_is_refused(make_harness: Any) -> None:
    harness = make_harness(max_client_id_length=8)
    assert harness.client(4).connect("123456789").reason_code == 0x02


def test_authentication_hook_sees_credentials_and_can_refuse(make_harness: Any) -> None:
    seen: list[ConnectInfo] = []

    def authenticate(info: ConnectInfo) -> AuthResult:
        seen.append(info)
        if info.password == b"secret":
            return AuthResult()
        return AuthResult(ReasonCode.BAD_USER_NAME_OR_PASSWORD)

    harness = make_harness(authenticate=authenticate)
    good = harness.client(4)
    assert good.connect("a", username="u", password=b"secret").reason_code == 0
    bad3 = harness.client(4)
    assert bad3.connect("b", username="u", password=b"wrong").reason_code == 0x04
    bad5 = harness.client(5)
    connack = bad5.connect("c", username="u", password=b"wrong")
    assert connack.reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD
    assert bad3.closed and bad5.closed
    assert [(i.client_id, i.username, i.password) for i in seen] == [
        ("a", "u", b"secret"),
        ("b", "u", b"wrong"),
        ("c", "u", b"wrong"),
    ]
    assert harness.broker.stats.connections_refused == 2


def test_anonymous_clients_are_allowed_by_default(harness: Harness) -> None:
    assert harness.client(5).connect("anon").reason_code == 0


def test_enhanced_authentication_is_refused_with_0x8c(harness: Harness) -> None:
    client = harness.client(5)
    connack = client.connect("c", properties=Properties(authentication_method="SCRAM-SHA-1"))
    assert connack.reason_code == ReasonCode.BAD_AUTHENTICATION_METHOD


def test_session_present_only_when_a_persistent_session_resumes(harness: Harness) -> None:
    first = harness.client(4)
    assert first.connect("p", clean_start=False).session_present is False
    first.disconnect()
    second = harness.client(4)
    assert second.connect("p", clean_start=False).session_present is True
    second.disconnect()
    third = harness.client(4)
    assert third.connect("p", clean_start=True).session_present is False


def test_5_connack_advertises_limits_and_features(make_harness: Any) -> None:
    harness = make_harness(
        receive_maximum=100,
        maximum_qos=1,
        retain_available=False,
        max_packet_size=4096,
        topic_alias_maximum=7,
        wildcard_subscription_available=False,
        subscription_identifier_available=False,
        shared_subscription_available=False,
    )
    props = harness.client(5).connect("c").properties
    assert props is not None
    assert props.receive_maximum == 100
    assert props.maximum_qos == 1
    assert props.retain_available == 0
    assert props.maximum_packet_size == 4096
    assert props.topic_alias_maximum == 7
    assert props.wildcard_subscription_available == 0
    assert props.subscription_identifier_available == 0
    assert props.shared_subscription_available == 0
    assert props.server_keep_alive is None
    assert props.assigned_client_identifier is None


def test_5_connack_leaves_out_maximum_qos_2(harness: Harness) -> None:
    props = harness.client(5).connect("c").properties
    assert props is not None and props.maximum_qos is None


def test_5_server_keep_alive_overrides_a_longer_keep_alive(make_harness: Any) -> None:
    harness = make_harness(max_keepalive=60)
    client = harness.client(5)
    props = client.connect("c", keep_alive=600).properties
    assert props is not None and props.server_keep_alive == 60
    harness.advance(91)
    assert client.closed


def test_5_session_expiry_above_the_maximum_is_lowered_in_connack(make_harness: Any) -> None:
    harness = make_harness(max_session_expiry_interval=100)
    props = harness.client(5).connect("c", properties=Properties(session_expiry_interval=5000))
    assert props.properties is not None
    assert props.properties.session_expiry_interval == 100
    assert harness.broker.sessions["c"].expiry_interval == 100


def test_takeover_closes_the_old_connection(harness: Harness) -> None:
    old = harness.connected("same", level=4)
    new = harness.connected("same", level=4)
    assert old.closed and not new.closed
    assert old.packets() == []
    assert harness.broker.stats.takeovers == 1
    assert harness.broker.stats.clients_connected == 1
    assert harness.broker.sessions["same"].connection is new.conn


def test_5_takeover_sends_disconnect_0x8e(harness: Harness) -> None:
    old = harness.connected("same", level=5)
    harness.connected("same", level=5)
    assert old.expect(Disconnect).reason_code == ReasonCode.SESSION_TAKEN_OVER
    assert old.closed


def test_takeover_publishes_the_old_will_in_3_1_1(harness: Harness) -> None:
    watcher = harness.connected("w")
    watcher.subscribe("will/#")
    harness.connected("same", will=Will("will/same", b"gone"))
    harness.connected("same")
    assert [(p.topic, p.payload) for p in watcher.publishes()] == [("will/same", b"gone")]


def test_5_takeover_publishes_a_will_without_delay(harness: Harness) -> None:
    watcher = harness.connected("w")
    watcher.subscribe("will/#")
    harness.connected("same", level=5, will=Will("will/same", b"gone"))
    harness.connected("same", level=5)
    assert [p.payload for p in watcher.publishes()] == [b"gone"]


def test_5_takeover_cancels_a_delayed_will(harness: Harness) -> None:
    watcher = harness.connected("w")
    watcher.subscribe("will/#")
    will = Will("will/same", b"gone", properties=Properties(will_delay_interval=30))
    expiry = Properties(session_expiry_interval=300)
    harness.connected("same", level=5, will=will, properties=expiry, clean_start=False)
    harness.connected("same", level=5, properties=expiry, clean_start=False)
    harness.advance(60)
    assert watcher.publishes() == []


def test_takeover_resumes_a_persistent_session_with_its_subscriptions(harness: Harness) -> None:
    old = harness.connected("same", clean_start=False)
    old.subscribe("t", qos=1)
    new = harness.client(4)
    assert new.connect("same", clean_start=False).session_present is True
    harness.connected("pub").publish("t", b"m", qos=1)
    assert [p.payload for p in new.publishes()] == [b"m"]
    assert old.closed


def test_takeover_of_a_clean_session_starts_a_new_one(harness: Harness) -> None:
    old = harness.connected("same", clean_start=True)
    old.subscribe("t")
    new = harness.client(4)
    assert new.connect("same", clean_start=False).session_present is False
    harness.connected("pub").publish("t")
    assert new.packets() == []


def test_packets_in_the_same_read_as_connect_are_handled(harness: Harness) -> None:
    client = harness.client(4)
    client.send(Connect("c", 4), PingReq())
    got = client.packets()
    assert [type(p) for p in got] == [Connack, PingResp]


def test_will_with_qos_above_maximum_is_refused(make_harness: Any) -> None:
    harness = make_harness(maximum_qos=1)
    client = harness.client(5)
    connack = client.connect("c", will=Will("w", b"x", qos=2))
    assert connack.reason_code == ReasonCode.QOS_NOT_SUPPORTED


def test_client_publish_without_connect_never_reaches_subscribers(harness: Harness) -> None:
    watcher = harness.connected("w")
    watcher.subscribe("#")
    intruder = harness.client(4)
    intruder.send(Publish("t", b"x"))
    assert intruder.closed
    assert watcher.packets() == []
