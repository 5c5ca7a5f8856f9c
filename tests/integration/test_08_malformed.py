"""Protocol violations from raw sockets: the offender is cut off, everyone else carries on.

Every test ends with `assert_broker_works`: a well-behaved client on the same broker
still connects, subscribes and gets its own QoS 1 message back. 3.1.1 has no way to say
why, so the broker just closes the connection [MQTT-4.8.0-1]; 5.0 sends DISCONNECT with
a reason code first (5.0 4.13.1), or a CONNACK with one while the CONNECT is handled.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from mqtt_raw import (
    CONNACK,
    DISCONNECT,
    SUBACK,
    TOPIC_ALIAS,
    TOPIC_ALIAS_MAXIMUM,
    RawClient,
    assert_broker_works,
    gen_connack,
    gen_connect,
    gen_pingreq,
    gen_pingresp,
    gen_publish,
    gen_pubrel,
    gen_subscribe,
    mqtt_string,
    prop_u16,
    remaining_length,
)

from .conftest import RawFactory

if TYPE_CHECKING:
    from conftest import MqttdFactory, MqttdProcess

pytestmark = pytest.mark.timeout(30)

MALFORMED = 0x81
PROTOCOL_ERROR = 0x82
TOPIC_NAME_INVALID = 0x90
TOPIC_ALIAS_INVALID = 0x94


def _expect_cut_off(client: RawClient, proto_ver: int, v5_codes: tuple[int, ...]) -> None:
    """3.1.1: closed with nothing sent. 5.0: DISCONNECT with one of ``v5_codes``, closed."""
    if proto_ver == 4:
        client.expect_closed(3)
        return
    packets = client.expect_closed(3, allow=[DISCONNECT])
    assert packets, f"5.0: expected DISCONNECT {[hex(c) for c in v5_codes]} before the close"
    code = packets[0].reason_code()
    assert code in v5_codes, (
        f"DISCONNECT 0x{code:02x}, expected one of {[hex(c) for c in v5_codes]}"
    )


def _expect_connect_refused(client: RawClient, v5_codes: tuple[int, ...] = ()) -> None:
    """Closed during CONNECT; a CONNACK, if any, is a refusal (with one of ``v5_codes``)."""
    packets = client.expect_closed(3, allow=[CONNACK])
    if packets:
        code = packets[0].reason_code()
        assert code != 0, "CONNACK accepted a broken CONNECT"
        if v5_codes:
            assert code in v5_codes, f"CONNACK 0x{code:02x}"


# --------------------------------------------------------------------------- CONNECT


@pytest.mark.parametrize(
    "first",
    [gen_pingreq(), gen_publish("t", payload=b"x"), gen_subscribe(1, "t", 0), b"\xe0\x00"],
    ids=["pingreq", "publish", "subscribe", "disconnect"],
)
def test_first_packet_other_than_connect_closes_the_connection(
    server: MqttdProcess, raw: RawFactory, first: bytes
) -> None:
    client = raw()
    client.send(first)
    assert client.expect_closed(3) == []  # [MQTT-3.1.0-1]
    assert_broker_works(server.host, server.port)


@pytest.mark.parametrize("proto_ver", [4, 5], ids=["v311", "v5"])
def test_second_connect_is_a_protocol_violation(
    server: MqttdProcess, raw: RawFactory, uid: str, proto_ver: int
) -> None:
    client = raw()
    client.connect(uid, proto_ver=proto_ver)
    client.send(gen_connect(uid, proto_ver=proto_ver))
    _expect_cut_off(client, proto_ver, (PROTOCOL_ERROR,))  # [MQTT-3.1.0-2]
    assert_broker_works(server.host, server.port)


@pytest.mark.parametrize("proto_ver", [4, 5], ids=["v311", "v5"])
def test_bad_protocol_name_is_refused(
    server: MqttdProcess, raw: RawFactory, uid: str, proto_ver: int
) -> None:
    client = raw()
    client.send(gen_connect(uid, proto_ver=proto_ver, proto_name=b"MQTX"))
    _expect_connect_refused(client)  # [MQTT-3.1.2-1]
    assert_broker_works(server.host, server.port)


@pytest.mark.parametrize("level", [2, 6, 255])
def test_unsupported_protocol_level_gets_connack_0x01_then_close(
    server: MqttdProcess, raw: RawFactory, uid: str, level: int
) -> None:
    client = raw()
    client.send(gen_connect(uid, proto_ver=level))
    # [MQTT-3.1.2-2]: 3.x CONNACK "unacceptable protocol level"; 5.0 clients never send it.
    client.expect_packet(gen_connack(rc=0x01), "CONNACK 0x01")
    client.expect_closed(3)
    assert_broker_works(server.host, server.port)


@pytest.mark.parametrize("proto_ver", [4, 5], ids=["v311", "v5"])
def test_reserved_connect_flag_set_is_refused(
    server: MqttdProcess, raw: RawFactory, uid: str, proto_ver: int
) -> None:
    client = raw()
    client.send(gen_connect(uid, proto_ver=proto_ver, reserved_flag=True))
    _expect_connect_refused(client, (MALFORMED,))  # [MQTT-3.1.2-3]
    assert_broker_works(server.host, server.port)


@pytest.mark.parametrize(
    "variant",
    [
        "will_qos_3",
        "will_qos_without_will_flag",
        "will_retain_without_will_flag",
        "password_without_username_v311",
    ],
)
def test_inconsistent_connect_flags_are_refused(
    server: MqttdProcess, raw: RawFactory, uid: str, variant: str
) -> None:
    client = raw()
    if variant == "will_qos_3":
        packet = gen_connect(uid, will_topic="w", will_payload=b"x", will_qos=3)  # [MQTT-3.1.2-14]
    elif variant == "password_without_username_v311":
        packet = gen_connect(uid, password=b"secret")  # [MQTT-3.1.2-22]
    else:
        edited = bytearray(gen_connect(uid))
        flags_at = 2 + 6 + 1  # fixed header, "MQTT" string, level
        edited[flags_at] |= 0x08 if variant == "will_qos_without_will_flag" else 0x20
        packet = bytes(edited)  # [MQTT-3.1.2-13], [MQTT-3.1.2-15]
    client.send(packet)
    _expect_connect_refused(client)
    assert_broker_works(server.host, server.port)


def test_v311_empty_client_id_without_clean_session_gets_connack_0x02(
    server: MqttdProcess, raw: RawFactory
) -> None:
    client = raw()
    client.send(gen_connect("", clean_session=False))
    client.expect_packet(gen_connack(rc=0x02), "CONNACK 0x02")  # [MQTT-3.1.3-8]
    client.expect_closed(3)
    assert_broker_works(server.host, server.port)


def test_truncated_connect_body_is_refused(server: MqttdProcess, raw: RawFactory, uid: str) -> None:
    good = gen_connect(uid)
    body = good[2:]
    # The remaining length covers the client id length field but not all its bytes.
    broken = b"\x10" + remaining_length(len(body) - 3) + body[:-3]
    client = raw()
    client.send(broken)
    _expect_connect_refused(client)
    assert_broker_works(server.host, server.port)


# --------------------------------------------------------------------------- after CONNECT


def _topic_with_bytes(raw_topic: bytes) -> bytes:
    return gen_publish(raw_topic, payload=b"x")


VIOLATIONS: list[tuple[str, Callable[[int], bytes], tuple[int, ...]]] = [
    # (name, packet for proto_ver, acceptable 5.0 DISCONNECT reason codes)
    (
        "subscribe_flags_0000",
        lambda v: gen_subscribe(1, "a", 0, proto_ver=v, flags=0),
        (MALFORMED,),
    ),
    ("pubrel_flags_0000", lambda v: gen_pubrel(1, proto_ver=v, flags=0), (MALFORMED,)),
    ("publish_qos_3", lambda v: gen_publish("a", qos=3, mid=1, proto_ver=v), (MALFORMED,)),
    (
        "publish_topic_plus",
        lambda v: gen_publish("a/+", proto_ver=v),
        (TOPIC_NAME_INVALID, MALFORMED, PROTOCOL_ERROR),
    ),
    (
        "publish_topic_hash",
        lambda v: gen_publish("a/#", proto_ver=v),
        (TOPIC_NAME_INVALID, MALFORMED, PROTOCOL_ERROR),
    ),
    (
        "publish_topic_invalid_utf8",
        lambda v: gen_publish(b"a/\xff\xfe", proto_ver=v),
        (MALFORMED, TOPIC_NAME_INVALID),
    ),
    (
        "publish_topic_nul",
        lambda v: gen_publish(b"a/\x00b", proto_ver=v),
        (MALFORMED, TOPIC_NAME_INVALID),
    ),
    (
        "publish_qos1_packet_id_0",
        lambda v: gen_publish("a", qos=1, mid=0, proto_ver=v),
        (MALFORMED, PROTOCOL_ERROR),
    ),
    ("subscribe_no_filters", lambda v: gen_subscribe(1, [], proto_ver=v), (PROTOCOL_ERROR,)),
    # 5.0 3.8.3.1: Maximum QoS 3 is a Protocol Error (reserved bits set would be Malformed).
    ("subscribe_options_qos_3", lambda v: gen_subscribe(1, "a", 3, proto_ver=v), (PROTOCOL_ERROR,)),
    (
        "subscribe_options_reserved_bits",
        lambda v: gen_subscribe(1, "a", 0xC0 if v == 5 else 0x04, proto_ver=v),
        (MALFORMED,),
    ),
    ("remaining_length_5_bytes", lambda v: b"\x30\xff\xff\xff\xff\x01", (MALFORMED,)),
    ("reserved_packet_type_0", lambda v: b"\x00\x00", (MALFORMED, PROTOCOL_ERROR)),
    ("connack_from_client", lambda v: gen_connack(proto_ver=v), (MALFORMED, PROTOCOL_ERROR)),
    (
        "topic_length_beyond_packet",
        lambda v: b"\x30" + remaining_length(4) + struct.pack("!H", 200) + b"ab",
        (MALFORMED,),
    ),
]


@pytest.mark.parametrize("proto_ver", [4, 5], ids=["v311", "v5"])
@pytest.mark.parametrize(("name", "make", "v5_codes"), VIOLATIONS, ids=[v[0] for v in VIOLATIONS])
def test_violation_after_connect_cuts_off_only_the_offender(
    server: MqttdProcess,
    raw: RawFactory,
    uid: str,
    proto_ver: int,
    name: str,
    make: Callable[[int], bytes],
    v5_codes: tuple[int, ...],
) -> None:
    bystander = raw()
    bystander.connect(f"{uid}-bystander", proto_ver=proto_ver)
    client = raw()
    client.connect(uid, proto_ver=proto_ver)
    client.send(make(proto_ver))
    _expect_cut_off(client, proto_ver, v5_codes)
    # The already-connected neighbour did not notice, and new clients still work.
    bystander.send(gen_pingreq())
    bystander.expect_packet(gen_pingresp(), "PINGRESP")
    assert_broker_works(server.host, server.port, proto_ver=proto_ver)


@pytest.mark.parametrize("proto_ver", [4, 5], ids=["v311", "v5"])
def test_empty_topic_filter_is_refused_or_cut_off(
    server: MqttdProcess, raw: RawFactory, uid: str, proto_ver: int
) -> None:
    client = raw()
    client.connect(uid, proto_ver=proto_ver)
    client.send(gen_subscribe(1, "", 0, proto_ver=proto_ver))  # [MQTT-4.7.3-1]
    # Closing is the rule for a violation; a SUBACK refusing the filter is also seen
    # (3.1.1: 0x80; 5.0: 0x8F Topic Filter invalid). Granting it is the bug.
    try:
        packet = client.read_packet(3)
    except TimeoutError:
        raise AssertionError("no answer to a SUBSCRIBE with an empty filter") from None
    if packet is not None and packet.type == SUBACK:
        assert packet.raw[-1] in (0x80, 0x8F), f"empty filter granted: {packet.raw.hex(' ')}"
        client.send(gen_pingreq())
        client.expect_packet(gen_pingresp(), "PINGRESP")
    elif packet is not None:
        assert proto_ver == 5, f"3.1.1 has nothing to say here: {packet.raw.hex(' ')}"
        assert packet.type == DISCONNECT and packet.reason_code() >= 0x80, packet.raw.hex(" ")
        client.expect_closed(3)
    assert_broker_works(server.host, server.port, proto_ver=proto_ver)


def test_auth_packet_from_v311_client_is_a_violation(
    server: MqttdProcess, raw: RawFactory, uid: str
) -> None:
    client = raw()
    client.connect(uid)
    client.send(b"\xf0\x00")  # AUTH exists only in 5.0
    client.expect_closed(3)
    assert_broker_works(server.host, server.port)


def test_remaining_length_over_4_bytes_before_connect_closes(
    server: MqttdProcess, raw: RawFactory
) -> None:
    client = raw()
    client.send(b"\x10\xff\xff\xff\xff\x01")
    assert client.expect_closed(3) == []
    assert_broker_works(server.host, server.port)


# --------------------------------------------------------------------------- 5.0 topic aliases


def _alias_maximum(client: RawClient, uid: str) -> int:
    connack = client.connect(uid, proto_ver=5)
    values = connack.properties().get(TOPIC_ALIAS_MAXIMUM, [0])
    assert isinstance(values[0], int)
    return values[0]


def test_v5_topic_alias_0_gets_disconnect_0x94(
    server: MqttdProcess, raw: RawFactory, uid: str
) -> None:
    client = raw()
    _alias_maximum(client, uid)
    client.send(gen_publish("a", proto_ver=5, properties=prop_u16(TOPIC_ALIAS, 0)))
    client.expect_disconnect(TOPIC_ALIAS_INVALID, 3)  # [MQTT-3.3.2-8]
    assert_broker_works(server.host, server.port, proto_ver=5)


def test_v5_topic_alias_above_maximum_gets_disconnect_0x94(
    server: MqttdProcess, raw: RawFactory, uid: str
) -> None:
    client = raw()
    maximum = _alias_maximum(client, uid)
    client.send(gen_publish("a", proto_ver=5, properties=prop_u16(TOPIC_ALIAS, maximum + 1)))
    client.expect_disconnect(TOPIC_ALIAS_INVALID, 3)  # [MQTT-3.3.2-9]
    assert_broker_works(server.host, server.port, proto_ver=5)


def test_v5_empty_topic_with_unknown_alias_is_a_protocol_error(
    server: MqttdProcess, raw: RawFactory, uid: str
) -> None:
    client = raw()
    maximum = _alias_maximum(client, uid)
    if maximum < 1:
        pytest.skip("broker accepts no topic aliases")
    client.send(gen_publish("", proto_ver=5, properties=prop_u16(TOPIC_ALIAS, 1)))
    _expect_cut_off(client, 5, (PROTOCOL_ERROR, TOPIC_ALIAS_INVALID))
    assert_broker_works(server.host, server.port, proto_ver=5)


def test_v5_empty_topic_without_alias_is_a_protocol_error(
    server: MqttdProcess, raw: RawFactory, uid: str
) -> None:
    client = raw()
    client.connect(uid, proto_ver=5)
    client.send(gen_publish("", proto_ver=5))
    _expect_cut_off(client, 5, (PROTOCOL_ERROR, TOPIC_NAME_INVALID))
    assert_broker_works(server.host, server.port, proto_ver=5)


def test_v311_empty_topic_name_closes(server: MqttdProcess, raw: RawFactory, uid: str) -> None:
    client = raw()
    client.connect(uid)
    client.send(gen_publish(""))  # [MQTT-4.7.3-1] at least one character
    client.expect_closed(3)
    assert_broker_works(server.host, server.port)


# --------------------------------------------------------------------------- timing


def test_socket_that_never_sends_connect_is_closed_after_connect_timeout(
    mqttd_factory: MqttdFactory,
) -> None:
    broker = mqttd_factory(config="[limits]\nconnect_timeout = 1.0\n")
    silent = RawClient(broker.host, broker.port, timeout=5)
    partial = RawClient(broker.host, broker.port, timeout=5)
    try:
        partial.send(gen_connect("half")[:5])  # a CONNECT that never completes
        start = time.monotonic()
        assert silent.expect_closed(4) == []
        assert partial.expect_closed(4) == []
        elapsed = time.monotonic() - start
        assert 0.8 <= elapsed <= 2.5, f"closed after {elapsed:.2f}s, connect_timeout is 1.0"
    finally:
        silent.close()
        partial.close()
    assert_broker_works(broker.host, broker.port)


def test_client_id_in_connect_is_checked_as_utf8(server: MqttdProcess, raw: RawFactory) -> None:
    client = raw()
    client.send(gen_connect(b"\xff\xfe-bad"))  # [MQTT-1.5.3-1]
    _expect_connect_refused(client, (MALFORMED, 0x85))
    assert_broker_works(server.host, server.port)


def test_oversized_remaining_length_does_not_make_the_broker_wait_for_it(
    server: MqttdProcess, raw: RawFactory, uid: str
) -> None:
    # Announce 200 MB and send a few bytes: the broker must not allocate or stall others.
    client = raw()
    client.connect(uid)
    client.send(b"\x30" + remaining_length(200_000_000) + mqtt_string("a") + b"xx")
    assert_broker_works(server.host, server.port)
    client.close()
