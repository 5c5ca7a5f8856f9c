"""The encoder refuses what a sender must not send, and its hot-path helpers."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mqttd.protocol import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    PingReq,
    Properties,
    PubAck,
    Publish,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
    decode_packet,
    encode,
    encode_publish,
    patch_packet_id,
    publish_packet_id_offset,
    with_packet_id,
    with_topic_alias,
)

REFUSED: list[tuple[str, Callable[[], bytes]]] = [
    ("QoS 0 with a packet id [MQTT-2.2.1-2]", lambda: encode(Publish("t", b"", 0, packet_id=1), 4)),
    ("QoS 1 without a packet id [MQTT-2.2.1-3]", lambda: encode(Publish("t", b"", 1), 4)),
    ("packet id 0", lambda: encode(Publish("t", b"", 2, packet_id=0), 5)),
    ("packet id 65536", lambda: encode(Publish("t", b"", 1, packet_id=65536), 4)),
    ("QoS 3 [MQTT-3.3.1-4]", lambda: encode(Publish("t", b"", 3, packet_id=1), 4)),
    ("DUP at QoS 0 [MQTT-3.3.1-2]", lambda: encode(Publish("t", b"", dup=True), 4)),
    ("'+' in a topic name [MQTT-3.3.2-2]", lambda: encode(Publish("a/+", b""), 4)),
    ("'#' in a topic name [MQTT-3.3.2-2]", lambda: encode(Publish("#", b""), 5)),
    ("U+0000 in a topic [MQTT-1.5.4-2]", lambda: encode(Publish("a\x00", b""), 4)),
    ("lone surrogate in a topic [MQTT-1.5.4-1]", lambda: encode(Publish("a\ud800", b""), 4)),
    ("topic over 65535 bytes", lambda: encode(Publish("é" * 32768, b""), 4)),
    ("empty topic at 3.1.1 [MQTT-4.7.3-1]", lambda: encode(Publish("", b""), 4)),
    ("empty topic without alias at 5.0", lambda: encode(Publish("", b""), 5)),
    (
        "Session Expiry Interval in PUBLISH [2.2.2.2]",
        lambda: encode(Publish("t", properties=Properties(session_expiry_interval=1)), 5),
    ),
    (
        "Topic Alias 0 [3.3.2.3.4]",
        lambda: encode(Publish("t", properties=Properties(topic_alias=0)), 5),
    ),
    (
        "Payload Format Indicator 2",
        lambda: encode(Publish("t", properties=Properties(payload_format_indicator=2)), 5),
    ),
    (
        "User Property with U+0000",
        lambda: encode(Publish("t", properties=Properties(user_property=(("a\x00", "b"),))), 5),
    ),
    (
        "Correlation Data over 65535 bytes",
        lambda: encode(Publish("t", properties=Properties(correlation_data=bytes(65536))), 5),
    ),
    (
        "Message Expiry Interval over 32 bits",
        lambda: encode(Publish("t", properties=Properties(message_expiry_interval=2**32)), 5),
    ),
    ("CONNECT level differs from the encoding level", lambda: encode(Connect("c", 4), 5)),
    ("3.1 CONNECT named MQTT", lambda: encode(Connect("c", 3), 3)),
    ("unknown protocol level", lambda: encode(PingReq(), 6)),
    (
        "3.1.1 password without user name [MQTT-3.1.2-22]",
        lambda: encode(Connect("c", password=b"p"), 4),
    ),
    ("Will QoS 3", lambda: encode(Connect("c", will=Will("w", b"", 3)), 4)),
    ("Will topic with a wildcard", lambda: encode(Connect("c", will=Will("w/#", b"")), 4)),
    ("Keep Alive over 65535", lambda: encode(Connect("c", keep_alive=65536), 4)),
    (
        "Receive Maximum 0 [3.1.2.11.3]",
        lambda: encode(Connect("c", 5, properties=Properties(receive_maximum=0)), 5),
    ),
    (
        "Authentication Data without Method [3.1.2.11.10]",
        lambda: encode(Connect("c", 5, properties=Properties(authentication_data=b"x")), 5),
    ),
    (
        "Will Delay Interval on CONNECT itself",
        lambda: encode(Connect("c", 5, properties=Properties(will_delay_interval=1)), 5),
    ),
    (
        "Session Expiry Interval in Will Properties",
        lambda: encode(
            Connect("c", 5, will=Will("w", b"", properties=Properties(session_expiry_interval=1))),
            5,
        ),
    ),
    ("session present with a refusal [MQTT-3.2.2-4]", lambda: encode(Connack(True, 5), 4)),
    ("3.x CONNACK return code 6", lambda: encode(Connack(False, 6), 4)),
    ("5.0 CONNACK reason 0x01", lambda: encode(Connack(False, 1), 5)),
    ("3.1 has no Session Present", lambda: encode(Connack(True, 0), 3)),
    ("PUBACK packet id 0", lambda: encode(PubAck(0), 4)),
    ("PUBACK reason 0x92", lambda: encode(PubAck(1, 0x92), 5)),
    ("PUBREL reason 0x10", lambda: encode(PubRel(1, 0x10), 5)),
    ("SUBSCRIBE without filters [MQTT-3.8.3-3]", lambda: encode(Subscribe(1, []), 4)),
    ("SUBSCRIBE invalid filter", lambda: encode(Subscribe(1, [Subscription("a/#/b")]), 4)),
    ("SUBSCRIBE QoS 3", lambda: encode(Subscribe(1, [Subscription("a", 3)]), 4)),
    (
        "SUBSCRIBE Retain Handling 3",
        lambda: encode(Subscribe(1, [Subscription("a", 0, retain_handling=3)]), 5),
    ),
    (
        "No Local on a Shared Subscription [MQTT-3.8.3-4]",
        lambda: encode(Subscribe(1, [Subscription("$share/g/a", 0, no_local=True)]), 5),
    ),
    (
        "two Subscription Identifiers in SUBSCRIBE",
        lambda: encode(
            Subscribe(1, [Subscription("a")], Properties(subscription_identifier=(1, 2))), 5
        ),
    ),
    (
        "Subscription Identifier 0",
        lambda: encode(
            Subscribe(1, [Subscription("a")], Properties(subscription_identifier=(0,))), 5
        ),
    ),
    ("SUBACK without codes", lambda: encode(SubAck(1, []), 4)),
    ("3.x SUBACK reason 0x97", lambda: encode(SubAck(1, [0x97]), 4)),
    ("UNSUBSCRIBE without filters [MQTT-3.10.3-2]", lambda: encode(Unsubscribe(1, []), 4)),
    ("UNSUBSCRIBE empty filter", lambda: encode(Unsubscribe(1, [""]), 4)),
    ("5.0 UNSUBACK without codes", lambda: encode(UnsubAck(1), 5)),
    ("DISCONNECT reason 0x01", lambda: encode(Disconnect(1), 5)),
    ("AUTH before MQTT 5", lambda: encode(Auth(), 4)),
    ("AUTH reason 0x04", lambda: encode(Auth(4), 5)),
]


@pytest.mark.parametrize("make", [r[1] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_encoder_refuses_what_a_sender_must_not_send(make: Callable[[], bytes]) -> None:
    with pytest.raises(ValueError):
        make()


def test_encoder_refuses_what_is_not_a_packet() -> None:
    # ValueError when interpreted; compiled (setup.py), `encode` checks its argument's type.
    with pytest.raises((TypeError, ValueError)):
        encode(object(), 4)  # type: ignore[arg-type]


def test_fields_mqtt_3_lacks_are_ignored_at_levels_3_and_4() -> None:
    assert encode(PubAck(1, 0x80, Properties(reason_string="x")), 4) == bytes.fromhex("40020001")
    assert encode(UnsubAck(1, [0x11]), 4) == bytes.fromhex("B0020001")
    assert encode(Disconnect(0x8E), 4) == bytes.fromhex("E000")
    subscription = Subscription("a", 1, no_local=True, retain_as_published=True, retain_handling=2)
    assert encode(Subscribe(1, [subscription]), 4) == bytes.fromhex("8206 0001 000161 01")
    publish = Publish("t", b"", properties=Properties(message_expiry_interval=5))
    assert encode(publish, 4) == bytes.fromhex("3003 000174")


def test_empty_properties_encode_like_none_and_decode_as_none() -> None:
    assert encode(PubAck(1, 0, Properties()), 5) == encode(PubAck(1), 5)
    assert encode(Publish("t", properties=Properties()), 5) == encode(Publish("t"), 5)
    decoded = decode_packet(encode(Connect("c", 5, properties=Properties()), 5), 5)
    assert decoded == Connect("c", 5)


def test_encode_publish_matches_encode() -> None:
    for level in (3, 4, 5):
        props = Properties(user_property=(("k", "v"),)) if level == 5 else None
        for qos in (0, 1, 2):
            pid = 7 if qos else None
            packet = Publish("a/b", b"x" * 130, qos, True, qos > 0, pid, props)
            direct = encode_publish("a/b", b"x" * 130, qos, True, qos > 0, pid, props, level)
            assert direct == encode(packet, level)


@pytest.mark.parametrize("level", [4, 5])
@pytest.mark.parametrize("payload_size", [0, 64, 200, 20000])
def test_publish_packet_id_offset_points_at_the_packet_id(level: int, payload_size: int) -> None:
    props = Properties(content_type="text/plain") if level == 5 else None
    encoded = encode_publish("é/topic", b"p" * payload_size, 1, False, False, 0x1234, props, level)
    offset = publish_packet_id_offset(encoded)
    assert encoded[offset : offset + 2] == b"\x12\x34"


def test_with_packet_id_patches_the_id_and_the_dup_flag() -> None:
    encoded = encode_publish("a/b", b"hello", 2, True, False, 1, None, 5)
    offset = publish_packet_id_offset(encoded)
    patched = with_packet_id(encoded, offset, 0xBEEF)
    assert decode_packet(patched, 5) == Publish("a/b", b"hello", 2, True, False, 0xBEEF)
    resent = with_packet_id(patched, offset, 9, dup=True)
    assert decode_packet(resent, 5) == Publish("a/b", b"hello", 2, True, True, 9)
    assert decode_packet(with_packet_id(resent, offset, 9), 5).dup is False  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        with_packet_id(encoded, offset, 0)


@pytest.mark.parametrize("level", [4, 5])
@pytest.mark.parametrize("dup", [False, True])
def test_patch_packet_id_gives_the_bytes_with_packet_id_gives(level: int, dup: bool) -> None:
    encoded = encode_publish("a/b", b"hello", 1, False, False, 1, None, level)
    offset = publish_packet_id_offset(encoded)
    patched = patch_packet_id(encoded, offset, 0x1234, dup)
    assert bytes(patched) == with_packet_id(encoded, offset, 0x1234, dup=dup)
    assert encoded[offset : offset + 2] == b"\x00\x01"  # the shared encoding is untouched


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("known", [False, True])
def test_with_topic_alias_adds_the_alias_and_drops_a_known_topic(qos: int, known: bool) -> None:
    props = Properties(content_type="text/plain", user_property=(("k", "v"),))
    packet_id = 7 if qos else None
    encoded = encode_publish("room/1/temp", b"21.5", qos, True, False, packet_id, props, 5)
    aliased, offset = with_topic_alias(encoded, qos, 0x0102, known)
    # The packet the encoder makes with the alias (the splice puts it last: same value).
    expected_props = Properties(
        content_type="text/plain", user_property=(("k", "v"),), topic_alias=0x0102
    )
    topic = "" if known else "room/1/temp"
    fresh = encode_publish(topic, b"21.5", qos, True, False, packet_id, expected_props, 5)
    assert len(aliased) == len(fresh)
    assert decode_packet(aliased, 5) == decode_packet(fresh, 5)
    assert decode_packet(aliased, 5) == Publish(
        topic, b"21.5", qos, True, False, packet_id, expected_props
    )
    if qos:
        assert offset == publish_packet_id_offset(aliased)
    else:
        assert offset == 0


def test_publish_packet_id_offset_refuses_qos_0_and_other_packets() -> None:
    with pytest.raises(ValueError):
        publish_packet_id_offset(encode_publish("t", b"", 0, False, False, None, None, 4))
    with pytest.raises(ValueError):
        publish_packet_id_offset(encode(PubAck(1), 4))
