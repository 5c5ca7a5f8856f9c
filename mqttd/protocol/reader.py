"""Incremental decoding of MQTT packets from a byte stream (sans-IO).

`PacketReader.feed(data)` takes whatever bytes the transport delivered and returns every
packet they complete; an incomplete tail waits for the next call. Nothing here knows
about sockets or event loops.

How the buffering works, and why. The common case is a read that holds whole packets
and nothing left over from before: then we decode straight out of the `bytes` object
we were handed, so a PUBLISH payload is one slice (one copy) of it. A packet that
straddles reads is kept as a list of chunks, with its total size known as soon as its
fixed header is complete; the chunks are joined once, when the last byte arrives, so a
large packet arriving in many reads costs one join, not a quadratic series of appends.
`max_packet_size` is checked from the fixed header, before any of the body is buffered.

A CONNECT ends a `feed`: the bytes after it wait in the reader, so the server can set the
limits for what follows once it has judged the CONNECT (a small `max_packet_size` until
the client is accepted, so an unauthenticated socket cannot make us buffer much), then
call `feed(b"")` to decode the rest.

Why a plain loop and not a generator parser (the websockets style, `yield from
read_exact(n)`, which reads beautifully): measured on CPython 3.11 with 92-byte QoS 0
PUBLISH packets (64-byte payload), a generator parser doing even fewer checks decoded
about 210k packets/s where this loop did 330k (1.5x), in batches and one packet per
call alike: every field read becomes a generator resume plus a buffer slice and delete.
PUBLISH is decoded inline in the loop; every other packet type goes to a function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from .datatypes import Cursor
from .errors import (
    MalformedPacket,
    MQTTError,
    PacketTooLarge,
    ProtocolError,
    UnsupportedProtocolVersion,
)
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
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)
from .properties import Properties, PropertyContext
from .property_codec import decode_properties
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
from .topics import is_shared

__all__ = ["DEFAULT_MAX_PACKET_SIZE", "PacketReader", "decode_packet"]

# Property contexts as plain ints: on CPython 3.11 reading an enum member costs
# several times more than reading a module global, and this is per packet.
_CTX_AUTH = int(PropertyContext.AUTH)
_CTX_CONNACK = int(PropertyContext.CONNACK)
_CTX_CONNECT = int(PropertyContext.CONNECT)
_CTX_DISCONNECT = int(PropertyContext.DISCONNECT)
_CTX_PUBACK = int(PropertyContext.PUBACK)
_CTX_PUBCOMP = int(PropertyContext.PUBCOMP)
_CTX_PUBLISH = int(PropertyContext.PUBLISH)
_CTX_PUBREC = int(PropertyContext.PUBREC)
_CTX_PUBREL = int(PropertyContext.PUBREL)
_CTX_SUBACK = int(PropertyContext.SUBACK)
_CTX_SUBSCRIBE = int(PropertyContext.SUBSCRIBE)
_CTX_UNSUBACK = int(PropertyContext.UNSUBACK)
_CTX_UNSUBSCRIBE = int(PropertyContext.UNSUBSCRIBE)
_CTX_WILL = int(PropertyContext.WILL)

# The largest packet MQTT can express: 1 type byte + 4 length bytes + 268,435,455.
DEFAULT_MAX_PACKET_SIZE = 268_435_460

# Packet identifiers are non-zero: 3.1.1 [MQTT-2.3.1-1], 5.0 [MQTT-2.2.1-3].
_PACKET_ID_RULE = "[MQTT-2.3.1-1] (5.0 [MQTT-2.2.1-3])"

# First byte -> class of the acknowledgements decoded inline when 4 bytes long (the
# fixed header flags are part of the key: PUBREL's must be 0010 [MQTT-3.6.1-1]).
_SHORT_ACKS: dict[int, type[PubAck | PubRec | PubRel | PubComp]] = {
    0x40: PubAck,
    0x50: PubRec,
    0x62: PubRel,
    0x70: PubComp,
}

# (fixed header flags, body bytes, start, end, protocol level) -> packet
_Decoder = Callable[[int, bytes, int, int, int], Packet]


class PacketReader:
    """Turns the bytes of one connection into packets.

    `protocol_level` is the level packets are decoded at: None on the server side
    until CONNECT arrives (anything else then decodes as 3.1.1); a decoded CONNECT sets
    it to that packet's level, for the packets after it in the same call too.
    `max_packet_size` counts the whole packet, fixed header included; both attributes
    may be changed between calls. A decoded CONNECT is the last packet `feed` returns;
    `feed(b"")` goes on with what followed it. Errors are `MQTTError` subclasses carrying the
    reason code to answer with; after one the reader is dead and raises it again.
    """

    __slots__ = (
        "_error",
        "_need",
        "_pending",
        "_pending_size",
        "max_packet_size",
        "protocol_level",
        "stopped",
    )

    def __init__(
        self, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE, protocol_level: int | None = None
    ) -> None:
        self.max_packet_size = max_packet_size
        self.protocol_level = protocol_level
        # Chunks of one incomplete packet; the list is made when first needed, since
        # most reads end on a packet boundary and idle connections must stay small.
        self._pending: list[bytes | memoryview] | None = None
        self._pending_size = 0
        self._need = 0  # size of that packet once its fixed header is complete, else 0
        self._error: MQTTError | None = None
        #: The last `feed` ended at a CONNECT with bytes after it: `feed(b"")` decodes them.
        self.stopped = False

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a packet."""
        return self._pending_size

    def feed(self, data: bytes | bytearray | memoryview) -> list[Packet]:
        """Consume `data`; return the packets it completes, in order."""
        if self._error is not None:
            raise self._error
        if type(data) is not bytes:
            data = bytes(data)
        packets: list[Packet] = []
        try:
            pos = self._complete_pending(data, packets) if self._pending else 0
            if pos >= 0:
                pos = self._parse(data, pos, packets)
        except MQTTError as exc:
            self._error = exc
            raise
        except (IndexError, UnicodeDecodeError) as exc:
            # A safety net only: every read is bounds-checked, and strings decode inside
            # Cursor, which turns a decoding error into MalformedPacket itself.
            error = MalformedPacket(f"malformed packet: {exc}")
            self._error = error
            raise error from exc
        if 0 <= pos < len(data):
            # Keep a view, not a copy: the join in _complete_pending copies it once.
            pending = self._pending
            if pending is None:
                pending = self._pending = []
            pending.append(memoryview(data)[pos:] if pos else data)
            self._pending_size = len(data) - pos
        self.stopped = bool(self._pending_size) and bool(packets) and type(packets[-1]) is Connect
        return packets

    def _complete_pending(self, data: bytes, packets: list[Packet]) -> int:
        """Add `data` to a packet cut by the previous read; decode it once complete.

        Returns where the rest of `data` begins, or -1 when the packet is still
        incomplete (then all of `data` has been kept).
        """
        pending = self._pending
        assert pending is not None  # feed() calls this only when chunks wait
        if self._need == 0:
            # The fixed header itself was cut (at most 4 bytes wait): glue them to the
            # new data and parse it all from the start.
            pending.append(data)
            whole = b"".join(pending)
            pending.clear()
            self._pending_size = 0
            end = self._parse(whole, 0, packets)
            if end < len(whole):
                pending.append(memoryview(whole)[end:])
                self._pending_size = len(whole) - end
            return -1
        have = self._pending_size + len(data)
        if have < self._need:
            pending.append(data)
            self._pending_size = have
            return -1
        take = self._need - self._pending_size
        pending.append(memoryview(data)[:take])
        whole = b"".join(pending)
        pending.clear()
        self._pending_size = 0
        self._parse(whole, 0, packets)
        if type(packets[-1]) is Connect and take < len(data):
            # Stop after a CONNECT (see the module docstring): the rest waits.
            self._need = 0
            pending.append(memoryview(data)[take:])
            self._pending_size = len(data) - take
            return -1
        return take

    def _parse(self, data: bytes, pos: int, packets: list[Packet]) -> int:
        """Decode every whole packet in data[pos:]; return where the rest begins.

        Sets `_need` to the size of the incomplete packet at the returned position
        (0 when even its fixed header is incomplete).
        """
        size = len(data)
        max_size = self.max_packet_size
        level = self.protocol_level
        if level is None:
            level = 4
        append = packets.append
        while True:
            if size - pos < 2:
                self._need = 0
                return pos
            first = data[pos]
            length = data[pos + 1]
            if length < 0x80:
                start = pos + 2
            else:
                length, start = _remaining_length(data, pos + 1, size)
                if not start:
                    self._need = 0
                    return pos
            end = start + length
            if end - pos > max_size:
                raise PacketTooLarge(
                    f"packet of {end - pos} bytes exceeds the maximum of {max_size}"
                )
            if end > size:
                if first >> 4 != 3:
                    # Refuse garbage before waiting for its body.
                    _check_fixed_header(first, level)
                self._need = end - pos
                return pos

            if first >> 4 == 3:
                # PUBLISH: the broker's hot path, decoded inline (3.3).
                qos = (first >> 1) & 3
                if qos == 3:
                    raise MalformedPacket("PUBLISH with QoS 3 [MQTT-3.3.1-4]")
                if qos == 0 and first & 0x08:
                    raise MalformedPacket("PUBLISH with DUP set at QoS 0 [MQTT-3.3.1-2]")
                if length < 2:
                    raise MalformedPacket("PUBLISH ends inside the topic length")
                body = start + 2
                topic_end = body + ((data[start] << 8) | data[start + 1])
                if topic_end > end:
                    raise MalformedPacket("PUBLISH topic runs past the end of the packet")
                try:
                    topic = data[body:topic_end].decode()
                except UnicodeDecodeError as exc:
                    raise MalformedPacket("topic is not well-formed UTF-8 [MQTT-1.5.4-1]") from exc
                if "\x00" in topic:
                    raise MalformedPacket("topic contains U+0000 [MQTT-1.5.4-2]")
                packet_id: int | None = None
                if qos:
                    if topic_end + 2 > end:
                        raise MalformedPacket("PUBLISH ends inside the packet identifier")
                    packet_id = (data[topic_end] << 8) | data[topic_end + 1]
                    if not packet_id:
                        raise ProtocolError(f"PUBLISH with packet identifier 0 {_PACKET_ID_RULE}")
                    topic_end += 2
                properties: Properties | None = None
                if level == 5:
                    if topic_end < end and not data[topic_end]:
                        topic_end += 1  # the usual empty property block
                    else:
                        cursor = Cursor(data, topic_end, end)
                        properties = decode_properties(cursor, _CTX_PUBLISH)
                        topic_end = cursor.pos
                append(
                    Publish(
                        topic,
                        data[topic_end:end],
                        qos,
                        (first & 0x01) == 1,
                        (first & 0x08) == 8,
                        packet_id,
                        properties,
                        # 3.x PUBLISH bytes carry nothing but the message: a receiver at
                        # the same level and QoS gets them as they are (Message, `raw`).
                        data[pos:end] if level != 5 else None,
                    )
                )
            elif length == 2 and first in _SHORT_ACKS:
                # PUBACK, PUBREC, PUBREL, PUBCOMP in their 4-byte form (every 3.x ack,
                # and 5.0's success): the other half of the hot path, also inline.
                packet_id = (data[start] << 8) | data[start + 1]
                if not packet_id:
                    raise ProtocolError(f"ack with packet identifier 0 {_PACKET_ID_RULE}")
                append(_SHORT_ACKS[first](packet_id))
            else:
                packet = _decode_control(first, data, start, end, level)
                append(packet)
                if type(packet) is Connect:
                    self.protocol_level = packet.protocol_level
                    self._need = 0  # the rest, if any, waits for the next feed
                    return end
            pos = end


def decode_packet(data: bytes, protocol_level: int) -> Packet:
    """Decode `data`, which must hold exactly one whole packet (for tests and tools)."""
    reader = PacketReader(protocol_level=protocol_level)
    packets = reader.feed(data)
    if len(packets) != 1 or reader.buffered:
        raise MalformedPacket(
            f"expected one whole packet, got {len(packets)} and {reader.buffered} bytes left"
        )
    return packets[0]


def _remaining_length(data: bytes, pos: int, size: int) -> tuple[int, int]:
    """Decode a Remaining Length of two to four bytes starting at data[pos].

    Returns (value, offset of the byte after it), or (0, 0) when the data ends first.
    """
    value = 0
    for shift in (0, 7, 14, 21):
        if pos >= size:
            return 0, 0
        digit = data[pos]
        pos += 1
        value |= (digit & 0x7F) << shift
        if digit < 0x80:
            return value, pos
    raise MalformedPacket("Remaining Length longer than four bytes [1.5.5]")


# Fixed header flags each packet type must carry (2.1.3). PUBLISH (3) has its own.
_REQUIRED_FLAGS = (0, 0, 0, -1, 0, 0, 0b0010, 0, 0b0010, 0, 0b0010, 0, 0, 0, 0, 0)


def _check_fixed_header(first: int, level: int) -> None:
    """Raise MalformedPacket for a reserved packet type or wrong reserved flags."""
    packet_type = first >> 4
    if packet_type == 0:
        raise MalformedPacket("packet type 0 is reserved [2.1.2]")
    if packet_type == 15 and level != 5:
        raise MalformedPacket("packet type 15 (AUTH) exists only in MQTT 5 [2.1.2]")
    if (first & 0x0F) != _REQUIRED_FLAGS[packet_type] and (level != 3 or packet_type == 1):
        # MQTT 3.1 left these bits unchecked (and some 3.1 clients set DUP on
        # SUBSCRIBE), so like Mosquitto we check them only from 3.1.1 on; a CONNECT's
        # level is not known yet, so its flags are always checked.
        raise MalformedPacket(
            f"invalid fixed header flags 0x{first & 0x0F:X} for packet type {packet_type} "
            "[MQTT-2.2.2-1] [MQTT-2.2.2-2] (5.0 2.1.3)"
        )


def _decode_control(first: int, data: bytes, start: int, end: int, level: int) -> Packet:
    """Decode any packet but PUBLISH, after checking its fixed header."""
    _check_fixed_header(first, level)
    decoder = _DECODERS[first >> 4]
    return decoder(first & 0x0F, data, start, end, level)


def _expect_end(cursor: Cursor, what: str) -> None:
    if cursor.pos != cursor.end:
        raise MalformedPacket(f"{cursor.end - cursor.pos} unexpected bytes at the end of {what}")


def _nonzero_packet_id(cursor: Cursor, what: str) -> int:
    packet_id = cursor.two_byte_integer()
    if not packet_id:
        raise ProtocolError(f"{what} with packet identifier 0 {_PACKET_ID_RULE}")
    return packet_id


# CONNECT protocol name -> levels it may announce (3.1.2.1, 3.1.2.2; 3.1: "MQIsdp", 3).
_PROTOCOL_LEVELS = {"MQTT": (4, 5), "MQIsdp": (3,)}


def _decode_connect(flags: int, data: bytes, start: int, end: int, level: int) -> Connect:
    """CONNECT (3.1), decoded at the level it announces, whatever the reader's level."""
    cursor = Cursor(data, start, end)
    protocol_name = cursor.utf8_string()
    protocol_level = cursor.byte() if cursor.remaining() else None
    if protocol_name not in _PROTOCOL_LEVELS:
        raise UnsupportedProtocolVersion(
            f"unknown protocol name {protocol_name!r} [MQTT-3.1.2-1]",
            protocol_level=protocol_level,
        )
    if protocol_level is None:
        raise MalformedPacket("CONNECT ends before the protocol level")
    bridge = False
    if protocol_level & 0x80 and (protocol_level & 0x7F) in _PROTOCOL_LEVELS[protocol_name]:
        # Not in the spec: Mosquitto bridges with try_private set the top bit of the
        # level (0x83, 0x84) to say "I am a bridge"; Mosquitto accepts it and so do we
        # (0x85 too, which Mosquitto reads as plain 5.0).
        bridge = True
        protocol_level &= 0x7F
    if protocol_level not in _PROTOCOL_LEVELS[protocol_name]:
        raise UnsupportedProtocolVersion(
            f"protocol {protocol_name!r} level {protocol_level} is not supported [MQTT-3.1.2-2]",
            protocol_level=protocol_level,
        )
    connect_flags = cursor.byte()
    if connect_flags & 0x01:
        raise MalformedPacket("CONNECT reserved flag is set [MQTT-3.1.2-3]")
    will_flag = connect_flags & 0x04
    will_qos = (connect_flags >> 3) & 0x03
    will_retain = connect_flags & 0x20
    has_password = connect_flags & 0x40
    has_username = connect_flags & 0x80
    if will_flag:
        if will_qos == 3:
            raise MalformedPacket("Will QoS 3 [MQTT-3.1.2-14] (5.0: [MQTT-3.1.2-12])")
    elif will_qos or will_retain:
        raise MalformedPacket(
            "Will QoS or Will Retain set without the Will Flag [MQTT-3.1.2-13] [MQTT-3.1.2-15]"
        )
    if has_password and not has_username and protocol_level < 5:
        # 5.0 allows a password without a user name (3.1.2.9); 3.x does not.
        raise MalformedPacket("password flag without user name flag [MQTT-3.1.2-22]")
    keep_alive = cursor.two_byte_integer()
    properties = None
    if protocol_level == 5:
        properties = decode_properties(cursor, _CTX_CONNECT)
        if (
            properties is not None
            and properties.authentication_data is not None
            and properties.authentication_method is None
        ):
            raise ProtocolError("Authentication Data without Authentication Method [3.1.2.11.10]")
    # The Client Identifier may be empty; whether that is acceptable is for the broker
    # to decide (3.1.3.1). Nor do we cap it at 23 characters for 3.1: like Mosquitto.
    client_id = cursor.utf8_string()
    will = None
    if will_flag:
        will_properties = None
        if protocol_level == 5:
            will_properties = decode_properties(cursor, _CTX_WILL)
        will_topic = cursor.utf8_string()
        will_payload = cursor.binary_data()
        will = Will(will_topic, will_payload, will_qos, bool(will_retain), will_properties)
    username = cursor.utf8_string() if has_username else None
    password = cursor.binary_data() if has_password else None
    _expect_end(cursor, "CONNECT")
    return Connect(
        client_id,
        protocol_level,
        bool(connect_flags & 0x02),
        keep_alive,
        username,
        password,
        will,
        properties,
        protocol_name,
        bridge,
    )


def _decode_connack(flags: int, data: bytes, start: int, end: int, level: int) -> Connack:
    """CONNACK (3.2)."""
    cursor = Cursor(data, start, end)
    acknowledge_flags = cursor.byte()
    if acknowledge_flags & 0xFE:
        raise MalformedPacket("CONNACK reserved acknowledge flags are set [MQTT-3.2.2-1]")
    code = cursor.byte()
    properties = None
    if level == 5:
        if code not in CONNACK_REASON_CODES:
            raise ProtocolError(f"0x{code:02X} is not a CONNACK reason code [3.2.2.2]")
        properties = decode_properties(cursor, _CTX_CONNACK)
    elif code not in CONNACK_RETURN_CODES_V3:
        raise ProtocolError(f"{code} is not a CONNACK return code [3.2.2.3]")
    session_present = acknowledge_flags == 1
    if session_present and code:
        raise ProtocolError("Session Present with a refusal [MQTT-3.2.2-4] (5.0 [MQTT-3.2.2-6])")
    _expect_end(cursor, "CONNACK")
    return Connack(session_present, code, properties)


_AckT = TypeVar("_AckT", PubAck, PubRec, PubRel, PubComp)


def _ack_decoder(
    cls: type[_AckT], context: int, codes: frozenset[int]
) -> Callable[[int, bytes, int, int, int], _AckT]:
    """Build the decoder of PUBACK, PUBREC, PUBREL or PUBCOMP (3.4-3.7)."""
    name = PropertyContext(context).name

    def decode(flags: int, data: bytes, start: int, end: int, level: int) -> _AckT:
        length = end - start
        if length < 2:
            raise MalformedPacket(f"{name} ends inside the packet identifier")
        packet_id = (data[start] << 8) | data[start + 1]
        if not packet_id:
            raise ProtocolError(f"{name} with packet identifier 0 {_PACKET_ID_RULE}")
        if length == 2:
            # 5.0: Reason Code and Property Length omitted mean Success (3.4.2.1).
            return cls(packet_id)
        if level != 5:
            raise MalformedPacket(f"{name} must have a Remaining Length of 2 in MQTT 3.x")
        code = data[start + 2]
        if code not in codes:
            raise ProtocolError(f"0x{code:02X} is not a {name} reason code")
        if length == 3:
            return cls(packet_id, code)  # no Property Length: no properties (3.4.2.2.1)
        cursor = Cursor(data, start + 3, end)
        properties = decode_properties(cursor, context)
        _expect_end(cursor, name)
        return cls(packet_id, code, properties)

    return decode


def _decode_subscribe(flags: int, data: bytes, start: int, end: int, level: int) -> Subscribe:
    """SUBSCRIBE (3.8). Topic filter syntax is left to the broker (it answers 0x8F)."""
    cursor = Cursor(data, start, end)
    packet_id = _nonzero_packet_id(cursor, "SUBSCRIBE")
    properties = None
    if level == 5:
        properties = decode_properties(cursor, _CTX_SUBSCRIBE)
    subscriptions: list[Subscription] = []
    while cursor.pos < end:
        topic_filter = cursor.utf8_string()
        options = cursor.byte()
        qos = options & 0x03
        if level == 5:
            if options & 0xC0:
                raise MalformedPacket("subscription options reserved bits set [MQTT-3.8.3-5]")
            if qos == 3:
                raise ProtocolError("subscription Maximum QoS 3 [3.8.3.1]")
            retain_handling = (options >> 4) & 0x03
            if retain_handling == 3:
                raise ProtocolError("Retain Handling 3 [3.8.3.1]")
            no_local = bool(options & 0x04)
            if no_local and is_shared(topic_filter):
                raise ProtocolError("No Local on a Shared Subscription [MQTT-3.8.3-4]")
            subscriptions.append(
                Subscription(topic_filter, qos, no_local, bool(options & 0x08), retain_handling)
            )
        else:
            if options & 0xFC or qos == 3:
                raise MalformedPacket(f"requested QoS byte 0x{options:02X} [MQTT-3-8.3-4]")
            subscriptions.append(Subscription(topic_filter, qos))
    if not subscriptions:
        raise ProtocolError("SUBSCRIBE without a topic filter [MQTT-3.8.3-3] (5.0 [MQTT-3.8.3-2])")
    return Subscribe(packet_id, subscriptions, properties)


def _decode_suback(flags: int, data: bytes, start: int, end: int, level: int) -> SubAck:
    """SUBACK (3.9)."""
    cursor = Cursor(data, start, end)
    packet_id = _nonzero_packet_id(cursor, "SUBACK")
    properties = None
    allowed = SUBACK_RETURN_CODES_V3
    if level == 5:
        properties = decode_properties(cursor, _CTX_SUBACK)
        allowed = SUBACK_REASON_CODES
    codes = list(cursor.rest())
    if not codes:
        raise ProtocolError("SUBACK without a reason code [3.9.3]")
    for code in codes:
        if code not in allowed:
            raise ProtocolError(f"0x{code:02X} is not a SUBACK reason code [3.9.3]")
    return SubAck(packet_id, codes, properties)


def _decode_unsubscribe(flags: int, data: bytes, start: int, end: int, level: int) -> Unsubscribe:
    """UNSUBSCRIBE (3.10)."""
    cursor = Cursor(data, start, end)
    packet_id = _nonzero_packet_id(cursor, "UNSUBSCRIBE")
    properties = None
    if level == 5:
        properties = decode_properties(cursor, _CTX_UNSUBSCRIBE)
    topic_filters: list[str] = []
    while cursor.pos < end:
        topic_filters.append(cursor.utf8_string())
    if not topic_filters:
        raise ProtocolError("UNSUBSCRIBE without a topic filter [MQTT-3.10.3-2]")
    return Unsubscribe(packet_id, topic_filters, properties)


def _decode_unsuback(flags: int, data: bytes, start: int, end: int, level: int) -> UnsubAck:
    """UNSUBACK (3.11): reason codes exist only in 5.0."""
    cursor = Cursor(data, start, end)
    packet_id = _nonzero_packet_id(cursor, "UNSUBACK")
    if level != 5:
        _expect_end(cursor, "UNSUBACK")
        return UnsubAck(packet_id)
    properties = decode_properties(cursor, _CTX_UNSUBACK)
    codes = list(cursor.rest())
    if not codes:
        raise ProtocolError("UNSUBACK without a reason code [3.11.3]")
    for code in codes:
        if code not in UNSUBACK_REASON_CODES:
            raise ProtocolError(f"0x{code:02X} is not an UNSUBACK reason code [3.11.3]")
    return UnsubAck(packet_id, codes, properties)


def _decode_pingreq(flags: int, data: bytes, start: int, end: int, level: int) -> PingReq:
    """PINGREQ (3.12): no body."""
    if end != start:
        raise MalformedPacket("PINGREQ with a body [3.12]")
    return PingReq()


def _decode_pingresp(flags: int, data: bytes, start: int, end: int, level: int) -> PingResp:
    """PINGRESP (3.13): no body."""
    if end != start:
        raise MalformedPacket("PINGRESP with a body [3.13]")
    return PingResp()


def _decode_disconnect(flags: int, data: bytes, start: int, end: int, level: int) -> Disconnect:
    """DISCONNECT (3.14). 5.0: Remaining Length 0 means Normal disconnection and no
    properties; below 2, no Property Length (3.14.2.1, 3.14.2.2.1)."""
    if level != 5:
        if end != start:
            raise MalformedPacket("DISCONNECT with a body in MQTT 3.x")
        return Disconnect()
    if end == start:
        return Disconnect()
    code = data[start]
    if code not in DISCONNECT_REASON_CODES:
        raise ProtocolError(f"0x{code:02X} is not a DISCONNECT reason code [3.14.2.1]")
    if end - start == 1:
        return Disconnect(code)
    cursor = Cursor(data, start + 1, end)
    properties = decode_properties(cursor, _CTX_DISCONNECT)
    _expect_end(cursor, "DISCONNECT")
    return Disconnect(code, properties)


def _decode_auth(flags: int, data: bytes, start: int, end: int, level: int) -> Auth:
    """AUTH (3.15, 5.0 only). Remaining Length 0 means Success without properties;
    we also accept a lone reason code, as the DISCONNECT rules would."""
    if end == start:
        return Auth()
    code = data[start]
    if code not in AUTH_REASON_CODES:
        raise ProtocolError(f"0x{code:02X} is not an AUTH reason code [3.15.2.1]")
    if end - start == 1:
        return Auth(code)
    cursor = Cursor(data, start + 1, end)
    properties = decode_properties(cursor, _CTX_AUTH)
    _expect_end(cursor, "AUTH")
    return Auth(code, properties)


def _reserved(flags: int, data: bytes, start: int, end: int, level: int) -> Packet:
    raise MalformedPacket("reserved packet type")  # _check_fixed_header stops it first


_DECODERS: tuple[_Decoder, ...] = (
    _reserved,
    _decode_connect,
    _decode_connack,
    _reserved,  # PUBLISH is decoded inline in PacketReader._parse
    _ack_decoder(PubAck, _CTX_PUBACK, PUBACK_REASON_CODES),
    _ack_decoder(PubRec, _CTX_PUBREC, PUBREC_REASON_CODES),
    _ack_decoder(PubRel, _CTX_PUBREL, PUBREL_REASON_CODES),
    _ack_decoder(PubComp, _CTX_PUBCOMP, PUBCOMP_REASON_CODES),
    _decode_subscribe,
    _decode_suback,
    _decode_unsubscribe,
    _decode_unsuback,
    _decode_pingreq,
    _decode_pingresp,
    _decode_disconnect,
    _decode_auth,
)
