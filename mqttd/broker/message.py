"""An application message on its way through the broker, with its shared encodings.

One `Message` is built per PUBLISH received (or per will, retained message, $SYS
update) and handed by reference to every session that matched. Receivers on the same
protocol level that get the same QoS and retain flag get the same bytes: the first one
encodes, the others reuse the cached encoding and patch their own packet id in
(`encoded_for`). Most messages go out one way only, so the cache holds that one
encoding in two slots and spills to a dict only when a second variant is needed.

A message with a Message Expiry Interval (5.0 3.3.2.3.3) carries `expiry_at`, a
deadline on the broker clock; each delivery then sends the time remaining, so those
deliveries are encoded one by one rather than cached.
"""

from __future__ import annotations

from ..protocol.datatypes import encode_variable_byte_integer
from ..protocol.encoder import encode_publish, publish_packet_id_offset
from ..protocol.properties import Properties

__all__ = ["Message", "encoding_key"]

_NO_ENCODING = (b"", 0)
_TOPIC_ALIAS = 0x23  # PropertyId.TOPIC_ALIAS


def encoding_key(protocol_level: int, qos: int, retain: bool) -> int:
    """The cache key of one encoding variant of a message."""
    return (protocol_level << 3) | (qos << 1) | retain


class Message:
    """An application message: topic, payload, QoS, retain, 5.0 properties.

    `properties` are the publisher's as received, minus the Topic Alias and any
    Subscription Identifier (both belong to one hop, not to the message). `origin` is
    the publisher's client id (None for messages the broker makes itself). `store_id`
    is set once the message has been recorded in the store for a persistent session.
    """

    __slots__ = (
        "_enc_key",
        "_enc_more",
        "_enc_value",
        "expiry_at",
        "origin",
        "payload",
        "properties",
        "qos",
        "retain",
        "store_id",
        "topic",
    )

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
        expiry_at: float | None = None,
        origin: str | None = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties
        self.expiry_at = expiry_at
        self.origin = origin
        self.store_id: int | None = None
        # The first encoding made (key -1: none yet); Session reads these two directly.
        self._enc_key = -1
        self._enc_value: tuple[bytes, int] = _NO_ENCODING
        self._enc_more: dict[int, tuple[bytes, int]] | None = None

    def __repr__(self) -> str:
        return (
            f"Message(topic={self.topic!r}, payload={self.payload[:32]!r}, qos={self.qos}, "
            f"retain={self.retain})"
        )

    def encoded_for(self, protocol_level: int, qos: int, retain: bool) -> tuple[bytes, int]:
        """The PUBLISH bytes for this variant and the offset of its packet id (0 for QoS 0).

        The packet id in the bytes is a placeholder: the caller patches its own in. Only
        valid for deliveries whose properties are the message's own (no expiry, no
        subscription identifiers); see `encode_one`.
        """
        key = (protocol_level << 3) | (qos << 1) | retain
        if key == self._enc_key:
            return self._enc_value
        more = self._enc_more
        if more is not None:
            hit = more.get(key)
            if hit is not None:
                return hit
        data = encode_publish(
            self.topic,
            self.payload,
            qos,
            retain,
            False,
            1 if qos else None,
            self.properties if protocol_level == 5 else None,
            protocol_level,
        )
        if not qos:
            value = (data, 0)
        elif protocol_level == 5:
            value = (data, publish_packet_id_offset(data))
        else:
            # 3.x: the packet id sits right before the payload.
            value = (data, len(data) - len(self.payload) - 2)
        if self._enc_key < 0:
            self._enc_key = key
            self._enc_value = value
        else:
            if more is None:
                more = self._enc_more = {}
            more[key] = value
        return value

    def encoded_aliased(
        self, qos: int, retain: bool, topic_alias: int, alias_known: bool
    ) -> tuple[bytes, int]:
        """The 5.0 PUBLISH with a server Topic Alias (and an empty topic when the
        receiver knows the alias, 3.3.2.3.4), and its packet id offset.

        Made from the shared 5.0 encoding by splicing the alias property in, and cached
        too: receivers whose alias for this topic is the same number share the bytes.
        """
        # Keys of aliased variants are >= 64, above every plain `encoding_key`.
        key = (((topic_alias << 1) | alias_known) << 7) | 64 | (qos << 1) | retain
        more = self._enc_more
        if more is not None:
            hit = more.get(key)
            if hit is not None:
                return hit
        data, _ = self.encoded_for(5, qos, retain)
        value = _with_topic_alias(data, qos, topic_alias, alias_known)
        more = self._enc_more
        if more is None:
            more = self._enc_more = {}
        more[key] = value
        return value

    def reuse(self, protocol_level: int, data: bytes) -> None:
        """Take `data`, the 3.x PUBLISH this message arrived in (DUP 0), as its encoding
        for receivers at that level and the same QoS and retain flag: those bytes differ
        from a fresh encoding only in the packet id, which each receiver patches anyway."""
        if self._enc_key < 0:
            qos = self.qos
            self._enc_key = (protocol_level << 3) | (qos << 1) | self.retain
            # 3.x: the packet id sits right before the payload.
            self._enc_value = (data, len(data) - len(self.payload) - 2 if qos else 0)

    def encode_one(
        self,
        protocol_level: int,
        qos: int,
        retain: bool,
        subscription_ids: tuple[int, ...],
        remaining_expiry: int | None,
        topic_alias: int = 0,
        alias_known: bool = False,
    ) -> tuple[bytes, int]:
        """Encode a delivery whose 5.0 properties are its own (not cached).

        Used for 5.0 receivers when the delivery carries Subscription Identifiers
        (3.3.4: one per matching subscription), a remaining Message Expiry Interval or a
        server Topic Alias (`topic_alias` > 0; `alias_known`: the receiver already maps
        it, so the topic is left empty, 3.3.2.3.4).
        """
        props = self.properties
        topic = self.topic
        if protocol_level == 5:
            props = _delivery_properties(props, subscription_ids, remaining_expiry)
            if topic_alias:
                props.topic_alias = topic_alias
                if alias_known:
                    topic = ""
        return self._encode(protocol_level, qos, retain, props, topic)

    def _encode(
        self,
        protocol_level: int,
        qos: int,
        retain: bool,
        properties: Properties | None,
        topic: str | None = None,
    ) -> tuple[bytes, int]:
        data = encode_publish(
            self.topic if topic is None else topic,
            self.payload,
            qos,
            retain,
            False,
            1 if qos else None,
            properties if protocol_level == 5 else None,
            protocol_level,
        )
        return data, (publish_packet_id_offset(data) if qos else 0)


def _with_topic_alias(data: bytes, qos: int, alias: int, known: bool) -> tuple[bytes, int]:
    """A 5.0 PUBLISH encoding with a Topic Alias property appended to its properties
    and, when `known`, its topic left empty; returns it with its packet id offset."""
    pos = 1
    while data[pos] & 0x80:  # the Remaining Length (1-4 bytes)
        pos += 1
    pos += 1
    topic_end = pos + 2 + ((data[pos] << 8) | data[pos + 1])
    props_at = topic_end + 2 if qos else topic_end
    props_length = 0
    shift = 0
    cursor = props_at
    while True:  # the Property Length (a Variable Byte Integer)
        byte = data[cursor]
        props_length |= (byte & 0x7F) << shift
        cursor += 1
        if not byte & 0x80:
            break
        shift += 7
    props_end = cursor + props_length
    topic = b"" if known else data[pos + 2 : topic_end]
    body = b"".join(
        (
            len(topic).to_bytes(2, "big"),
            topic,
            data[topic_end:props_at],  # the packet id placeholder, if any
            encode_variable_byte_integer(props_length + 3),
            data[cursor:props_end],
            bytes((_TOPIC_ALIAS, alias >> 8, alias & 0xFF)),
            data[props_end:],
        )
    )
    header = bytes((data[0],)) + encode_variable_byte_integer(len(body))
    return header + body, (len(header) + 2 + len(topic) if qos else 0)


def _delivery_properties(
    props: Properties | None, subscription_ids: tuple[int, ...], remaining_expiry: int | None
) -> Properties:
    """A copy of `props` with this delivery's subscription ids and remaining expiry."""
    if props is None:
        out = Properties()
    else:
        # Field by field copy keeps the order of user properties (a tuple) untouched.
        out = Properties(
            payload_format_indicator=props.payload_format_indicator,
            content_type=props.content_type,
            response_topic=props.response_topic,
            correlation_data=props.correlation_data,
            user_property=props.user_property,
        )
    out.subscription_identifier = subscription_ids
    out.message_expiry_interval = remaining_expiry
    return out
