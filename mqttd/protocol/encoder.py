"""Encoding MQTT packets to bytes (sans-IO).

`encode(packet, protocol_level)` handles every packet type. The broker's hot path calls
`encode_publish` directly with the message's fields, and encodes one message once per
(protocol level, QoS, retain) for all its receivers, patching each receiver's packet
identifier into a copy:

    encoded = encode_publish("a/b", payload, 1, False, False, 1, None, 4)
    offset = publish_packet_id_offset(encoded)   # computed once per encoding
    for_alice = with_packet_id(encoded, offset, 17)
    for_bob = with_packet_id(encoded, offset, 9, dup=True)   # a retransmission

`patch_packet_id` is the same patch without the checks, for the broker's hot path (the
offset comes from this module). `with_topic_alias` turns a 5.0 PUBLISH encoding into
the one carrying a server Topic Alias (and no topic once the receiver knows the alias,
3.3.2.3.4) by splicing, without encoding the properties again. Every detail of the
PUBLISH byte layout (Remaining Length, property length, packet id offset, DUP bit) lives
here and in reader.py, nowhere in the broker.

The encoder checks what the spec requires of a sender, so we never emit a malformed
packet or a protocol violation: a packet identifier exactly when QoS > 0, non-zero;
no QoS 3; strings without U+0000 that fit 65535 bytes; properties allowed in that
packet; reason codes that packet may carry. A violation raises `ValueError` (it is a bug
in the caller, not something the peer did). Fields that MQTT 3.x lacks (properties,
5.0-only reason codes, subscription options besides QoS) are ignored at levels 3 and 4.
"""

from __future__ import annotations

from .datatypes import (
    MAX_VARIABLE_BYTE_INTEGER,
    encode_binary_data,
    encode_two_byte_integer,
    encode_utf8_string,
    encode_variable_byte_integer,
    frame,
)
from .errors import TopicFilterInvalid
from .packets import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)
from .properties import Properties, PropertyContext
from .property_codec import encode_properties
from .reason_codes import (
    AUTH_REASON_CODES,
    CONNACK_REASON_CODES,
    CONNACK_RETURN_CODES_V3,
    DISCONNECT_REASON_CODES,
    PUBACK_REASON_CODES,
    PUBCOMP_REASON_CODES,
    PUBREC_REASON_CODES,
    PUBREL_REASON_CODES,
    SUBACK_REASON_CODES,
    SUBACK_RETURN_CODES_V3,
    UNSUBACK_REASON_CODES,
)
from .topics import is_shared, validate_topic_filter

__all__ = [
    "encode",
    "encode_publish",
    "patch_packet_id",
    "publish_packet_id_offset",
    "with_packet_id",
    "with_topic_alias",
]

_DUP = 0x08
_TOPIC_ALIAS = 0x23  # PropertyId.TOPIC_ALIAS

# Property contexts as plain ints: on CPython 3.11 reading an enum member costs
# several times more than reading a module global, and this is per packet.
_CTX_PUBACK = int(PropertyContext.PUBACK)
_CTX_PUBREC = int(PropertyContext.PUBREC)
_CTX_PUBREL = int(PropertyContext.PUBREL)
_CTX_PUBCOMP = int(PropertyContext.PUBCOMP)
_CTX_AUTH = int(PropertyContext.AUTH)
_CTX_CONNACK = int(PropertyContext.CONNACK)
_CTX_CONNECT = int(PropertyContext.CONNECT)
_CTX_DISCONNECT = int(PropertyContext.DISCONNECT)
_CTX_PUBLISH = int(PropertyContext.PUBLISH)
_CTX_SUBACK = int(PropertyContext.SUBACK)
_CTX_SUBSCRIBE = int(PropertyContext.SUBSCRIBE)
_CTX_UNSUBACK = int(PropertyContext.UNSUBACK)
_CTX_UNSUBSCRIBE = int(PropertyContext.UNSUBSCRIBE)
_CTX_WILL = int(PropertyContext.WILL)

_PROTOCOL_NAMES = {3: "MQIsdp", 4: "MQTT", 5: "MQTT"}
_EMPTY_PROPERTIES = b"\x00"
_PINGREQ = b"\xc0\x00"
_PINGRESP = b"\xd0\x00"
_DISCONNECT_SHORT = b"\xe0\x00"
_AUTH_SHORT = b"\xf0\x00"


def encode(packet: Packet, protocol_level: int) -> bytes:
    """Encode `packet` as MQTT at `protocol_level` (3, 4 or 5).

    A CONNECT must announce that same level, and the matching protocol name.
    """
    if protocol_level not in _PROTOCOL_NAMES:
        raise ValueError(f"unknown protocol level {protocol_level}")
    match packet:
        case Publish():
            return encode_publish(
                packet.topic,
                packet.payload,
                packet.qos,
                packet.retain,
                packet.dup,
                packet.packet_id,
                packet.properties,
                protocol_level,
            )
        case PubAck() | PubRec() | PubRel() | PubComp():
            return _encode_ack(packet, protocol_level)
        case PingReq():
            return _PINGREQ
        case PingResp():
            return _PINGRESP
        case Connect():
            return _encode_connect(packet, protocol_level)
        case Connack():
            return _encode_connack(packet, protocol_level)
        case Subscribe():
            return _encode_subscribe(packet, protocol_level)
        case SubAck():
            return _encode_suback(packet, protocol_level)
        case Unsubscribe():
            return _encode_unsubscribe(packet, protocol_level)
        case UnsubAck():
            return _encode_unsuback(packet, protocol_level)
        case Disconnect():
            return _encode_disconnect(packet, protocol_level)
        case Auth():
            return _encode_auth(packet, protocol_level)
    raise ValueError(f"not an MQTT packet: {packet!r}")


def encode_publish(
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    dup: bool,
    packet_id: int | None,
    properties: Properties | None,
    protocol_level: int,
) -> bytes:
    """Encode a PUBLISH (3.3) from its fields: the hot path, a few concatenations.

    `topic` may be empty only at level 5 with a Topic Alias property (3.3.2.3.4).
    """
    if qos == 0:
        if packet_id is not None:
            raise ValueError("a QoS 0 PUBLISH has no packet identifier [MQTT-2.2.1-2]")
        if dup:
            raise ValueError("DUP must be 0 at QoS 0 [MQTT-3.3.1-2]")
        variable = b""
        first = 0x31 if retain else 0x30
    elif qos == 1 or qos == 2:
        if packet_id is None or not 0 < packet_id <= 0xFFFF:
            raise ValueError(f"QoS {qos} PUBLISH needs a packet identifier 1-65535: {packet_id}")
        variable = packet_id.to_bytes(2, "big")
        first = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    else:
        raise ValueError(f"QoS {qos} does not exist [MQTT-3.3.1-4]")
    if "+" in topic or "#" in topic or "\x00" in topic:
        raise ValueError(f"topic name {topic!r} contains a wildcard or U+0000 [MQTT-3.3.2-2]")
    encoded_topic = topic.encode()  # UnicodeEncodeError (a ValueError) for surrogates
    topic_length = len(encoded_topic)
    if protocol_level == 5:
        if properties is None:
            variable += _EMPTY_PROPERTIES
        else:
            variable += encode_properties(properties, _CTX_PUBLISH)
    if not topic_length and (
        protocol_level != 5 or properties is None or properties.topic_alias is None
    ):
        raise ValueError("empty topic name without a Topic Alias [MQTT-4.7.3-1]")
    if topic_length > 0xFFFF:
        raise ValueError("topic name is longer than 65535 bytes [MQTT-4.7.3-3]")
    remaining = 2 + topic_length + len(variable) + len(payload)
    if remaining < 0x80:
        header = bytes((first, remaining, topic_length >> 8, topic_length & 0xFF))
    else:
        if remaining > MAX_VARIABLE_BYTE_INTEGER:
            raise ValueError("PUBLISH is larger than MQTT allows")
        header = (
            bytes((first,))
            + encode_variable_byte_integer(remaining)
            + topic_length.to_bytes(2, "big")
        )
    return b"".join((header, encoded_topic, variable, payload))


def publish_packet_id_offset(encoded: bytes) -> int:
    """Where the 2-byte packet identifier sits in an encoded QoS 1 or 2 PUBLISH.

    It follows the fixed header and the topic name (3.3.2): 1 type byte, 1-4
    Remaining Length bytes, 2 topic length bytes, then the topic. Raises ValueError
    when `encoded` is not a PUBLISH with QoS > 0.
    """
    if len(encoded) < 2 or encoded[0] >> 4 != 3 or not (encoded[0] >> 1) & 0x03:
        raise ValueError("not a QoS 1 or 2 PUBLISH")
    pos = 1
    while encoded[pos] & 0x80:
        pos += 1
        if pos > 4 or pos >= len(encoded):
            raise ValueError("bad Remaining Length")
    pos += 1
    if pos + 2 > len(encoded):
        raise ValueError("PUBLISH ends inside the topic length")
    offset = pos + 2 + ((encoded[pos] << 8) | encoded[pos + 1])
    if offset + 2 > len(encoded):
        raise ValueError("PUBLISH ends inside the packet identifier")
    return offset


def with_packet_id(encoded: bytes, offset: int, packet_id: int, *, dup: bool = False) -> bytes:
    """A copy of an encoded QoS > 0 PUBLISH with another packet identifier (and DUP).

    `offset` comes from `publish_packet_id_offset(encoded)`.
    """
    if not 0 < packet_id <= 0xFFFF:
        raise ValueError(f"packet identifier {packet_id} is not in 1-65535")
    first = encoded[0] | 0x08 if dup else encoded[0] & 0xF7
    return b"".join(
        (bytes((first,)), encoded[1:offset], packet_id.to_bytes(2, "big"), encoded[offset + 2 :])
    )


def patch_packet_id(encoded: bytes, offset: int, packet_id: int, dup: bool) -> bytearray:
    """`with_packet_id` for the hot path: a mutable copy, no checks.

    `offset` must come from this module (`publish_packet_id_offset`, `with_topic_alias`)
    and `packet_id` be 1-65535; sinks take the bytearray as they take bytes.
    """
    buf = bytearray(encoded)
    buf[offset] = packet_id >> 8
    buf[offset + 1] = packet_id & 0xFF
    if dup:
        buf[0] |= _DUP
    return buf


def with_topic_alias(encoded: bytes, qos: int, alias: int, known: bool) -> tuple[bytes, int]:
    """A 5.0 PUBLISH encoding with a Topic Alias property appended to its properties and,
    when `known` (the receiver maps the alias already), its topic left empty (3.3.2.3.4).

    Returns the new bytes and the offset of their packet id (0 at QoS 0). `encoded` is a
    5.0 PUBLISH from `encode_publish` without a Topic Alias.
    """
    pos = 1
    while encoded[pos] & 0x80:  # the Remaining Length (1-4 bytes)
        pos += 1
    pos += 1
    topic_end = pos + 2 + ((encoded[pos] << 8) | encoded[pos + 1])
    props_at = topic_end + 2 if qos else topic_end
    props_length = 0
    shift = 0
    cursor = props_at
    while True:  # the Property Length (a Variable Byte Integer)
        byte = encoded[cursor]
        props_length |= (byte & 0x7F) << shift
        cursor += 1
        if not byte & 0x80:
            break
        shift += 7
    props_end = cursor + props_length
    topic = b"" if known else encoded[pos + 2 : topic_end]
    body = b"".join(
        (
            len(topic).to_bytes(2, "big"),
            topic,
            encoded[topic_end:props_at],  # the packet id placeholder, if any
            encode_variable_byte_integer(props_length + 3),
            encoded[cursor:props_end],
            bytes((_TOPIC_ALIAS, alias >> 8, alias & 0xFF)),
            encoded[props_end:],
        )
    )
    header = bytes((encoded[0],)) + encode_variable_byte_integer(len(body))
    return header + body, (len(header) + 2 + len(topic) if qos else 0)


def _packet_id(packet_id: int, what: str) -> bytes:
    if not 0 < packet_id <= 0xFFFF:
        raise ValueError(f"{what} needs a packet identifier 1-65535, not {packet_id}")
    return packet_id.to_bytes(2, "big")


def _check_code(code: int, allowed: frozenset[int], what: str) -> None:
    if code not in allowed:
        raise ValueError(f"0x{code:02X} is not a valid {what} reason code")


# Packet class -> (first byte, property context, name, allowed reason codes).
_ACKS: dict[type, tuple[int, int, str, frozenset[int]]] = {
    PubAck: (0x40, _CTX_PUBACK, "PUBACK", PUBACK_REASON_CODES),
    PubRec: (0x50, _CTX_PUBREC, "PUBREC", PUBREC_REASON_CODES),
    PubRel: (0x62, _CTX_PUBREL, "PUBREL", PUBREL_REASON_CODES),
    PubComp: (0x70, _CTX_PUBCOMP, "PUBCOMP", PUBCOMP_REASON_CODES),
}


def _encode_ack(packet: PubAck | PubRec | PubRel | PubComp, level: int) -> bytes:
    """PUBACK, PUBREC, PUBREL, PUBCOMP (3.4-3.7), in the shortest form 5.0 allows."""
    first, context, name, codes = _ACKS[type(packet)]
    packet_id = _packet_id(packet.packet_id, name)
    if level != 5:
        return bytes((first, 2)) + packet_id
    code = packet.reason_code
    _check_code(code, codes, name)
    properties = encode_properties(packet.properties, context)
    if properties == _EMPTY_PROPERTIES:
        if not code:
            return bytes((first, 2)) + packet_id
        return bytes((first, 3)) + packet_id + bytes((code,))
    return frame(first, packet_id + bytes((code,)) + properties)


def _encode_connect(packet: Connect, level: int) -> bytes:
    """CONNECT (3.1)."""
    if packet.protocol_level != level:
        raise ValueError(f"CONNECT announces level {packet.protocol_level}, encoding at {level}")
    if packet.protocol_name != _PROTOCOL_NAMES[level]:
        raise ValueError(f"level {level} goes with protocol name {_PROTOCOL_NAMES[level]!r}")
    flags = 0x02 if packet.clean_start else 0
    will = packet.will
    if will is not None:
        if will.qos not in (0, 1, 2):
            raise ValueError(f"Will QoS {will.qos} does not exist [MQTT-3.1.2-14]")
        if not will.topic or "+" in will.topic or "#" in will.topic:
            raise ValueError(f"Will Topic {will.topic!r} is not a topic name [3.1.3.3]")
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if packet.username is not None:
        flags |= 0x80
    if packet.password is not None:
        if packet.username is None and level < 5:
            raise ValueError("MQTT 3.x sends no password without a user name [MQTT-3.1.2-22]")
        flags |= 0x40
    parts = [
        encode_utf8_string(packet.protocol_name, "protocol name"),
        # The bridge bit (0x80 | level) is Mosquitto's try_private; see Connect.bridge.
        bytes((level | 0x80 if packet.bridge else level, flags)),
        encode_two_byte_integer(packet.keep_alive, "Keep Alive"),
    ]
    if level == 5:
        properties = packet.properties
        if (
            properties is not None
            and properties.authentication_data is not None
            and properties.authentication_method is None
        ):
            raise ValueError("Authentication Data without Authentication Method [3.1.2.11.10]")
        parts.append(encode_properties(properties, _CTX_CONNECT))
    parts.append(encode_utf8_string(packet.client_id, "Client Identifier"))
    if will is not None:
        if level == 5:
            parts.append(encode_properties(will.properties, _CTX_WILL))
        parts.append(encode_utf8_string(will.topic, "Will Topic"))
        parts.append(encode_binary_data(will.payload, "Will Payload"))
    if packet.username is not None:
        parts.append(encode_utf8_string(packet.username, "User Name"))
    if packet.password is not None:
        parts.append(encode_binary_data(packet.password, "Password"))
    return frame(0x10, b"".join(parts))


def _encode_connack(packet: Connack, level: int) -> bytes:
    """CONNACK (3.2). At levels 3 and 4 `reason_code` is the 3.x return code."""
    code = packet.reason_code
    if packet.session_present and code:
        raise ValueError("Session Present must be 0 with a refusal [MQTT-3.2.2-4]")
    if level == 5:
        _check_code(code, CONNACK_REASON_CODES, "CONNACK")
        properties = encode_properties(packet.properties, _CTX_CONNACK)
        return frame(0x20, bytes((packet.session_present, code)) + properties)
    _check_code(code, CONNACK_RETURN_CODES_V3, "MQTT 3.x CONNACK")
    if level == 3 and packet.session_present:
        raise ValueError("MQTT 3.1 has no Session Present flag")
    return bytes((0x20, 2, packet.session_present, code))


def _check_filter(topic_filter: str) -> None:
    try:
        validate_topic_filter(topic_filter)
    except TopicFilterInvalid as exc:
        raise ValueError(str(exc)) from exc


def _encode_subscribe(packet: Subscribe, level: int) -> bytes:
    """SUBSCRIBE (3.8); at 3.x the options byte is the requested QoS alone."""
    parts = [_packet_id(packet.packet_id, "SUBSCRIBE")]
    if level == 5:
        parts.append(encode_properties(packet.properties, _CTX_SUBSCRIBE))
    if not packet.subscriptions:
        raise ValueError("SUBSCRIBE needs at least one topic filter [MQTT-3.8.3-3]")
    for subscription in packet.subscriptions:
        _check_filter(subscription.topic_filter)
        qos = subscription.qos
        if qos not in (0, 1, 2):
            raise ValueError(f"requested QoS {qos} does not exist")
        parts.append(encode_utf8_string(subscription.topic_filter, "Topic Filter"))
        if level == 5:
            if subscription.retain_handling not in (0, 1, 2):
                raise ValueError(f"Retain Handling {subscription.retain_handling} [3.8.3.1]")
            if subscription.no_local and is_shared(subscription.topic_filter):
                raise ValueError("No Local on a Shared Subscription [MQTT-3.8.3-4]")
            options = (
                qos
                | (0x04 if subscription.no_local else 0)
                | (0x08 if subscription.retain_as_published else 0)
                | (subscription.retain_handling << 4)
            )
            parts.append(bytes((options,)))
        else:
            parts.append(bytes((qos,)))
    return frame(0x82, b"".join(parts))


def _encode_suback(packet: SubAck, level: int) -> bytes:
    """SUBACK (3.9)."""
    parts = [_packet_id(packet.packet_id, "SUBACK")]
    allowed = SUBACK_RETURN_CODES_V3
    if level == 5:
        parts.append(encode_properties(packet.properties, _CTX_SUBACK))
        allowed = SUBACK_REASON_CODES
    if not packet.reason_codes:
        raise ValueError("SUBACK needs one reason code per topic filter [3.9.3]")
    for code in packet.reason_codes:
        _check_code(code, allowed, "SUBACK")
    parts.append(bytes(packet.reason_codes))
    return frame(0x90, b"".join(parts))


def _encode_unsubscribe(packet: Unsubscribe, level: int) -> bytes:
    """UNSUBSCRIBE (3.10)."""
    parts = [_packet_id(packet.packet_id, "UNSUBSCRIBE")]
    if level == 5:
        parts.append(encode_properties(packet.properties, _CTX_UNSUBSCRIBE))
    if not packet.topic_filters:
        raise ValueError("UNSUBSCRIBE needs at least one topic filter [MQTT-3.10.3-2]")
    for topic_filter in packet.topic_filters:
        _check_filter(topic_filter)
        parts.append(encode_utf8_string(topic_filter, "Topic Filter"))
    return frame(0xA2, b"".join(parts))


def _encode_unsuback(packet: UnsubAck, level: int) -> bytes:
    """UNSUBACK (3.11); reason codes and properties only at level 5."""
    packet_id = _packet_id(packet.packet_id, "UNSUBACK")
    if level != 5:
        return b"\xb0\x02" + packet_id
    if not packet.reason_codes:
        raise ValueError("UNSUBACK needs one reason code per topic filter [3.11.3]")
    for code in packet.reason_codes:
        _check_code(code, UNSUBACK_REASON_CODES, "UNSUBACK")
    properties = encode_properties(packet.properties, _CTX_UNSUBACK)
    return frame(0xB0, packet_id + properties + bytes(packet.reason_codes))


def _encode_disconnect(packet: Disconnect, level: int) -> bytes:
    """DISCONNECT (3.14), in the shortest form 5.0 allows."""
    if level != 5:
        return _DISCONNECT_SHORT
    code = packet.reason_code
    _check_code(code, DISCONNECT_REASON_CODES, "DISCONNECT")
    properties = encode_properties(packet.properties, _CTX_DISCONNECT)
    if properties == _EMPTY_PROPERTIES:
        return _DISCONNECT_SHORT if not code else bytes((0xE0, 1, code))
    return frame(0xE0, bytes((code,)) + properties)


def _encode_auth(packet: Auth, level: int) -> bytes:
    """AUTH (3.15, 5.0 only). Only Success without properties may drop the body."""
    if level != 5:
        raise ValueError("AUTH exists only in MQTT 5")
    code = packet.reason_code
    _check_code(code, AUTH_REASON_CODES, "AUTH")
    properties = encode_properties(packet.properties, _CTX_AUTH)
    if properties == _EMPTY_PROPERTIES and not code:
        return _AUTH_SHORT
    return frame(0xF0, bytes((code,)) + properties)
