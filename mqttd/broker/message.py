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

from ..protocol.encoder import encode_publish, publish_packet_id_offset
from ..protocol.properties import Properties

__all__ = ["Message", "encoding_key"]

_NO_ENCODING = (b"", 0)


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

    def encode_one(
        self,
        protocol_level: int,
        qos: int,
        retain: bool,
        subscription_ids: tuple[int, ...],
        remaining_expiry: int | None,
    ) -> tuple[bytes, int]:
        """Encode a delivery whose 5.0 properties are its own (not cached).

        Used for 5.0 receivers when the delivery carries Subscription Identifiers
        (3.3.4: one per matching subscription) or a remaining Message Expiry Interval.
        """
        props = self.properties
        if protocol_level == 5:
            props = _delivery_properties(props, subscription_ids, remaining_expiry)
        return self._encode(protocol_level, qos, retain, props)

    def _encode(
        self, protocol_level: int, qos: int, retain: bool, properties: Properties | None
    ) -> tuple[bytes, int]:
        data = encode_publish(
            self.topic,
            self.payload,
            qos,
            retain,
            False,
            1 if qos else None,
            properties if protocol_level == 5 else None,
            protocol_level,
        )
        return data, (publish_packet_id_offset(data) if qos else 0)


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
