"""An application message on its way through the broker, with its shared encodings.

One `Message` is built per PUBLISH received (or per will, retained message, $SYS
update) and handed by reference to every session that matched. Receivers on the same
protocol level that get the same QoS and retain flag get the same bytes: the first one
encodes, the others reuse the cached encoding and patch their own packet id in
(`encoding`, then `protocol.encoder.patch_packet_id`). Most messages go out one way
only, so the cache holds that one encoding in two slots and spills to a dict only when a
second variant is needed.

A 3.x PUBLISH as received is already the encoding for receivers at its level, QoS and
retain flag (the constructor's `raw`). The reader copies those bytes out of the socket's
read along with the payload; copying them only when such a receiver asks was measured
(a lazy slice of the read, dropped after routing) at 0.3 us more per message when a
receiver does ask, the usual case, against the 0.05-0.1 us copy it saves otherwise, so
the copy stays.

A message with a Message Expiry Interval (5.0 3.3.2.3.3) carries `expiry_at`, a
deadline on the broker clock; each 5.0 delivery then sends the time remaining, so those
deliveries are encoded one by one rather than cached, as are 5.0 deliveries carrying
Subscription Identifiers. The byte layout itself is protocol/encoder.py's.
"""

from __future__ import annotations

from ..protocol.encoder import encode_publish, publish_packet_id_offset, with_topic_alias
from ..protocol.properties import Properties

__all__ = ["Message"]

_NO_ENCODING = (b"", 0)


class Message:
    """An application message: topic, payload, QoS, retain, 5.0 properties.

    `properties` are the publisher's as received, minus the Topic Alias and any
    Subscription Identifier (both belong to one hop, not to the message). `origin` is
    the publisher's client id (None for messages the broker makes itself). `store_id`
    is set once the message has been recorded in the store for a persistent session.
    """

    __slots__ = (
        "_enc_more",
        "encoded",
        "encoded_key",
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
        raw: bytes | None = None,
        raw_level: int = 0,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties
        self.expiry_at = expiry_at
        self.origin = origin
        self.store_id: int | None = None
        #: The first shared encoding made: its key ``(level << 3) | (qos << 1) | retain``
        #: (-1: none yet) and its (bytes, packet id offset); the others spill to a dict.
        #: Read-only outside this class: `Session`'s hot path reads these two to save a
        #: call per receiver, and calls `encoding` on a miss.
        self.encoded: tuple[bytes, int]
        if raw is None:
            self.encoded_key = -1
            self.encoded = _NO_ENCODING
        else:
            # `raw`: the 3.x PUBLISH (DUP 0, level `raw_level`) this message arrived in,
            # taken as its encoding for receivers at that level, QoS and retain flag: those
            # bytes differ from a fresh encoding only in the packet id, which each receiver
            # patches anyway. Taken here rather than by a method called after: one call
            # less per PUBLISH (about 80 ns, 3 % of fan-in QoS 0's CPU per message).
            self.encoded_key = (raw_level << 3) | (qos << 1) | retain
            # 3.x: the packet id sits right before the payload.
            self.encoded = (raw, len(raw) - len(payload) - 2 if qos else 0)
        self._enc_more: dict[int, tuple[bytes, int]] | None = None

    def __repr__(self) -> str:
        return (
            f"Message(topic={self.topic!r}, payload={self.payload[:32]!r}, qos={self.qos}, "
            f"retain={self.retain})"
        )

    def encoding(
        self,
        protocol_level: int,
        qos: int,
        retain: bool,
        subscription_ids: tuple[int, ...] = (),
        remaining_expiry: int | None = None,
        topic_alias: int = 0,
        alias_known: bool = False,
    ) -> tuple[bytes, int]:
        """One delivery's PUBLISH bytes and the offset of its packet id (0 for QoS 0).

        The packet id in the bytes is a placeholder that the caller patches
        (`protocol.encoder.patch_packet_id`). For 5.0: `subscription_ids` (3.3.4) and
        `remaining_expiry` make the delivery's properties its own, so it is encoded
        alone; `topic_alias` > 0 is the receiver's server Topic Alias, and `alias_known`
        says it maps it already, so the topic is left empty (3.3.2.3.4). Every other
        delivery shares the encoding of its (level, QoS, retain) and, if aliased, alias.
        """
        if protocol_level == 5 and (subscription_ids or remaining_expiry is not None):
            return self._encode_own(
                qos, retain, subscription_ids, remaining_expiry, topic_alias, alias_known
            )
        if topic_alias and protocol_level == 5:
            return self._aliased(qos, retain, topic_alias, alias_known)
        key = (protocol_level << 3) | (qos << 1) | retain
        if key == self.encoded_key:
            return self.encoded
        more = self._enc_more
        if more is not None:
            hit = more.get(key)
            if hit is not None:
                return hit
        value = self._encode(protocol_level, qos, retain, self.properties)
        if self.encoded_key < 0:
            self.encoded_key = key
            self.encoded = value
        else:
            if more is None:
                more = self._enc_more = {}
            more[key] = value
        return value

    def _aliased(self, qos: int, retain: bool, alias: int, known: bool) -> tuple[bytes, int]:
        # Made from the shared 5.0 encoding by splicing the alias in, and cached too:
        # receivers whose alias for this topic is the same number share the bytes. Keys
        # of aliased variants are >= 64, above every plain (level, QoS, retain) key.
        key = (((alias << 1) | known) << 7) | 64 | (qos << 1) | retain
        more = self._enc_more
        if more is not None:
            hit = more.get(key)
            if hit is not None:
                return hit
        data, _ = self.encoding(5, qos, retain)
        value = with_topic_alias(data, qos, alias, known)
        more = self._enc_more
        if more is None:
            more = self._enc_more = {}
        more[key] = value
        return value

    def _encode_own(
        self,
        qos: int,
        retain: bool,
        subscription_ids: tuple[int, ...],
        remaining_expiry: int | None,
        topic_alias: int,
        alias_known: bool,
    ) -> tuple[bytes, int]:
        props = _delivery_properties(self.properties, subscription_ids, remaining_expiry)
        topic = self.topic
        if topic_alias:
            props.topic_alias = topic_alias
            if alias_known:
                topic = ""
        return self._encode(5, qos, retain, props, topic)

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
        if not qos:
            return data, 0
        if protocol_level == 5:
            return data, publish_packet_id_offset(data)
        # 3.x: the packet id sits right before the payload.
        return data, len(data) - len(self.payload) - 2


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
