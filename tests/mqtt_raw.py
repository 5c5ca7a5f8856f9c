"""Hand-written MQTT packets and a blocking raw-socket client, for tests.

The Python counterpart of Mosquitto's ``test/mosq_test.py``: every ``gen_*`` function
builds one packet byte by byte from the specification, *without* mqttd's encoder, so a
bug in mqttd's codec cannot hide itself by being on both sides of a test. ``RawClient``
speaks over a real socket with short timeouts and reads whole packets back
(``expect_packet``, ``expect_closed``, ``expect_disconnect``).

Protocol versions are the protocol level byte: 3 (3.1, "MQIsdp"), 4 (3.1.1), 5 (5.0).
Properties are passed already encoded (``prop_u32(...) + prop_str(...)``); the builders
add the property length. A reason code of ``None`` means "leave it out", as the
specification allows for the short forms of acknowledgements and DISCONNECT.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "CONNACK",
    "CONNECT",
    "DISCONNECT",
    "PINGREQ",
    "PINGRESP",
    "PUBACK",
    "PUBCOMP",
    "PUBLISH",
    "PUBREC",
    "PUBREL",
    "SUBACK",
    "SUBSCRIBE",
    "UNSUBACK",
    "UNSUBSCRIBE",
    "Packet",
    "ProtocolViolation",
    "RawClient",
    "assert_broker_works",
    "decode_properties",
    "gen_connack",
    "gen_connect",
    "gen_disconnect",
    "gen_pingreq",
    "gen_pingresp",
    "gen_puback",
    "gen_pubcomp",
    "gen_publish",
    "gen_pubrec",
    "gen_pubrel",
    "gen_suback",
    "gen_subscribe",
    "gen_unsuback",
    "gen_unsubscribe",
    "mqtt_string",
    "prop_bin",
    "prop_str",
    "prop_u8",
    "prop_u16",
    "prop_u32",
    "prop_varint",
    "remaining_length",
]

# Packet types (high nibble of the fixed header, spec 2.1.2).
CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14
AUTH = 15

PACKET_NAMES = {
    CONNECT: "CONNECT",
    CONNACK: "CONNACK",
    PUBLISH: "PUBLISH",
    PUBACK: "PUBACK",
    PUBREC: "PUBREC",
    PUBREL: "PUBREL",
    PUBCOMP: "PUBCOMP",
    SUBSCRIBE: "SUBSCRIBE",
    SUBACK: "SUBACK",
    UNSUBSCRIBE: "UNSUBSCRIBE",
    UNSUBACK: "UNSUBACK",
    PINGREQ: "PINGREQ",
    PINGRESP: "PINGRESP",
    DISCONNECT: "DISCONNECT",
    AUTH: "AUTH",
}

# MQTT 5.0 property identifiers used by the tests (spec 2.2.2.2).
PAYLOAD_FORMAT_INDICATOR = 0x01
MESSAGE_EXPIRY_INTERVAL = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_IDENTIFIER = 0x0B
SESSION_EXPIRY_INTERVAL = 0x11
ASSIGNED_CLIENT_IDENTIFIER = 0x12
SERVER_KEEP_ALIVE = 0x13
AUTHENTICATION_METHOD = 0x15
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
MAXIMUM_QOS = 0x24
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27
WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
SHARED_SUBSCRIPTION_AVAILABLE = 0x2A
WILL_DELAY_INTERVAL = 0x18

# How each property's value is laid out on the wire, for decode_properties.
_PROPERTY_KINDS: dict[int, str] = {
    0x01: "u8", 0x02: "u32", 0x03: "str", 0x08: "str", 0x09: "bin", 0x0B: "varint",
    0x11: "u32", 0x12: "str", 0x13: "u16", 0x15: "str", 0x16: "bin", 0x17: "u8",
    0x18: "u32", 0x19: "u8", 0x1A: "str", 0x1C: "str", 0x1F: "str", 0x21: "u16",
    0x22: "u16", 0x23: "u16", 0x24: "u8", 0x25: "u8", 0x26: "pair", 0x27: "u32",
    0x28: "u8", 0x29: "u8", 0x2A: "u8",
}  # fmt: skip

PropertyValue = int | str | bytes | tuple[str, str]


class ProtocolViolation(AssertionError):
    """The peer did something the test did not expect (wrong bytes, early close, silence)."""


# --------------------------------------------------------------------------- primitives


def remaining_length(n: int) -> bytes:
    """The Variable Byte Integer encoding of ``n`` (spec 1.5.5), at most 4 bytes."""
    if not 0 <= n <= 268_435_455:
        raise ValueError(f"remaining length out of range: {n}")
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def mqtt_string(s: str | bytes) -> bytes:
    """A UTF-8 Encoded String / Binary Data: two-byte length then the bytes (spec 1.5.4)."""
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(raw)) + raw


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + remaining_length(len(body)) + body


def _properties(props: bytes) -> bytes:
    return remaining_length(len(props)) + props


def prop_u8(prop_id: int, value: int) -> bytes:
    """A property whose value is one byte."""
    return bytes([prop_id, value])


def prop_u16(prop_id: int, value: int) -> bytes:
    """A property whose value is a Two Byte Integer."""
    return bytes([prop_id]) + struct.pack("!H", value)


def prop_u32(prop_id: int, value: int) -> bytes:
    """A property whose value is a Four Byte Integer."""
    return bytes([prop_id]) + struct.pack("!I", value)


def prop_varint(prop_id: int, value: int) -> bytes:
    """A property whose value is a Variable Byte Integer."""
    return bytes([prop_id]) + remaining_length(value)


def prop_str(prop_id: int, value: str) -> bytes:
    """A property whose value is a UTF-8 Encoded String."""
    return bytes([prop_id]) + mqtt_string(value)


def prop_bin(prop_id: int, value: bytes) -> bytes:
    """A property whose value is Binary Data."""
    return bytes([prop_id]) + mqtt_string(value)


def prop_user(key: str, value: str) -> bytes:
    """A User Property (a UTF-8 string pair)."""
    return bytes([USER_PROPERTY]) + mqtt_string(key) + mqtt_string(value)


# --------------------------------------------------------------------------- builders


def gen_connect(
    client_id: str | bytes,
    *,
    clean_session: bool = True,
    keepalive: int = 60,
    username: str | None = None,
    password: bytes | None = None,
    will_topic: str | None = None,
    will_payload: bytes = b"",
    will_qos: int = 0,
    will_retain: bool = False,
    will_properties: bytes = b"",
    proto_ver: int = 4,
    proto_name: bytes | None = None,
    properties: bytes = b"",
    reserved_flag: bool = False,
) -> bytes:
    """CONNECT (spec 3.1). ``proto_name`` defaults to MQIsdp for level 3, MQTT otherwise."""
    if proto_name is None:
        proto_name = b"MQIsdp" if proto_ver == 3 else b"MQTT"
    flags = 0x01 if reserved_flag else 0x00
    if clean_session:
        flags |= 0x02
    if will_topic is not None:
        flags |= 0x04 | (will_qos << 3)
        if will_retain:
            flags |= 0x20
    if password is not None:
        flags |= 0x40
    if username is not None:
        flags |= 0x80
    body = mqtt_string(proto_name) + bytes([proto_ver, flags]) + struct.pack("!H", keepalive)
    if proto_ver == 5:
        body += _properties(properties)
    body += mqtt_string(client_id)
    if will_topic is not None:
        if proto_ver == 5:
            body += _properties(will_properties)
        body += mqtt_string(will_topic) + mqtt_string(will_payload)
    if username is not None:
        body += mqtt_string(username)
    if password is not None:
        body += mqtt_string(password)
    return _packet(0x10, body)


def gen_connack(
    *, session_present: bool = False, rc: int = 0, proto_ver: int = 4, properties: bytes = b""
) -> bytes:
    """CONNACK (spec 3.2); for 5.0 the given properties are the whole property set."""
    body = bytes([0x01 if session_present else 0x00, rc])
    if proto_ver == 5:
        body += _properties(properties)
    return _packet(0x20, body)


def gen_publish(
    topic: str | bytes,
    *,
    qos: int = 0,
    payload: bytes = b"",
    retain: bool = False,
    dup: bool = False,
    mid: int = 0,
    proto_ver: int = 4,
    properties: bytes = b"",
) -> bytes:
    """PUBLISH (spec 3.3). ``qos`` is written into the header as given, even 3."""
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = mqtt_string(topic)
    if qos > 0:
        body += struct.pack("!H", mid)
    if proto_ver == 5:
        body += _properties(properties)
    return _packet(first, body + payload)


def _ack(first: int, mid: int, proto_ver: int, rc: int | None, properties: bytes) -> bytes:
    body = struct.pack("!H", mid)
    if proto_ver == 5 and (rc is not None or properties):
        body += bytes([rc or 0])
        if properties:
            body += _properties(properties)
    return _packet(first, body)


def gen_puback(
    mid: int, *, proto_ver: int = 4, rc: int | None = None, properties: bytes = b""
) -> bytes:
    """PUBACK (spec 3.4); 5.0 short form (no reason code) when ``rc`` is None."""
    return _ack(0x40, mid, proto_ver, rc, properties)


def gen_pubrec(
    mid: int, *, proto_ver: int = 4, rc: int | None = None, properties: bytes = b""
) -> bytes:
    """PUBREC (spec 3.5)."""
    return _ack(0x50, mid, proto_ver, rc, properties)


def gen_pubrel(
    mid: int,
    *,
    proto_ver: int = 4,
    rc: int | None = None,
    properties: bytes = b"",
    flags: int = 0x02,
) -> bytes:
    """PUBREL (spec 3.6); its fixed-header flags MUST be 0010 [MQTT-3.6.1-1]."""
    return _ack(0x60 | flags, mid, proto_ver, rc, properties)


def gen_pubcomp(
    mid: int, *, proto_ver: int = 4, rc: int | None = None, properties: bytes = b""
) -> bytes:
    """PUBCOMP (spec 3.7)."""
    return _ack(0x70, mid, proto_ver, rc, properties)


def gen_subscribe(
    mid: int,
    topics: str | Sequence[tuple[str, int]],
    qos: int = 0,
    *,
    proto_ver: int = 4,
    properties: bytes = b"",
    flags: int = 0x02,
) -> bytes:
    """SUBSCRIBE (spec 3.8): one filter with ``qos``, or (filter, options byte) pairs.

    The fixed-header flags MUST be 0010 [MQTT-3.8.1-1]; pass ``flags`` to break that.
    """
    pairs = [(topics, qos)] if isinstance(topics, str) else list(topics)
    body = struct.pack("!H", mid)
    if proto_ver == 5:
        body += _properties(properties)
    for topic, options in pairs:
        body += mqtt_string(topic) + bytes([options])
    return _packet(0x80 | flags, body)


def gen_suback(
    mid: int, codes: int | Iterable[int], *, proto_ver: int = 4, properties: bytes = b""
) -> bytes:
    """SUBACK (spec 3.9) with one return/reason code per filter."""
    code_list = [codes] if isinstance(codes, int) else list(codes)
    body = struct.pack("!H", mid)
    if proto_ver == 5:
        body += _properties(properties)
    return _packet(0x90, body + bytes(code_list))


def gen_unsubscribe(
    mid: int, topics: str | Sequence[str], *, proto_ver: int = 4, properties: bytes = b""
) -> bytes:
    """UNSUBSCRIBE (spec 3.10)."""
    topic_list = [topics] if isinstance(topics, str) else list(topics)
    body = struct.pack("!H", mid)
    if proto_ver == 5:
        body += _properties(properties)
    for topic in topic_list:
        body += mqtt_string(topic)
    return _packet(0xA2, body)


def gen_unsuback(
    mid: int, codes: int | Iterable[int] = (), *, proto_ver: int = 4, properties: bytes = b""
) -> bytes:
    """UNSUBACK (spec 3.11); 3.1.1 has no payload, 5.0 one reason code per filter."""
    body = struct.pack("!H", mid)
    if proto_ver == 5:
        code_list = [codes] if isinstance(codes, int) else list(codes)
        body += _properties(properties) + bytes(code_list)
    return _packet(0xB0, body)


def gen_pingreq() -> bytes:
    """PINGREQ (spec 3.12)."""
    return b"\xc0\x00"


def gen_pingresp() -> bytes:
    """PINGRESP (spec 3.13)."""
    return b"\xd0\x00"


def gen_disconnect(*, proto_ver: int = 4, rc: int | None = None, properties: bytes = b"") -> bytes:
    """DISCONNECT (spec 3.14); 5.0 may carry a reason code and properties."""
    body = b""
    if proto_ver == 5 and (rc is not None or properties):
        body = bytes([rc or 0])
        if properties:
            body += _properties(properties)
    return _packet(0xE0, body)


# --------------------------------------------------------------------------- decoding


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    for i in range(4):
        if pos + i >= len(data):
            raise ProtocolViolation("truncated Variable Byte Integer")
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos + i + 1
        shift += 7
    raise ProtocolViolation("Variable Byte Integer longer than 4 bytes")


def decode_properties(data: bytes, pos: int = 0) -> tuple[dict[int, list[PropertyValue]], int]:
    """Decode a 5.0 property block at ``pos``; return {id: [values]} and the end offset."""
    length, pos = _read_varint(data, pos)
    end = pos + length
    props: dict[int, list[PropertyValue]] = {}
    while pos < end:
        prop_id = data[pos]
        pos += 1
        kind = _PROPERTY_KINDS.get(prop_id)
        value: PropertyValue
        if kind == "u8":
            value, pos = data[pos], pos + 1
        elif kind == "u16":
            value, pos = struct.unpack_from("!H", data, pos)[0], pos + 2
        elif kind == "u32":
            value, pos = struct.unpack_from("!I", data, pos)[0], pos + 4
        elif kind == "varint":
            value, pos = _read_varint(data, pos)
        elif kind in ("str", "bin"):
            (n,) = struct.unpack_from("!H", data, pos)
            raw = data[pos + 2 : pos + 2 + n]
            value, pos = (raw.decode() if kind == "str" else raw), pos + 2 + n
        elif kind == "pair":
            (n,) = struct.unpack_from("!H", data, pos)
            key = data[pos + 2 : pos + 2 + n].decode()
            pos += 2 + n
            (m,) = struct.unpack_from("!H", data, pos)
            value, pos = (key, data[pos + 2 : pos + 2 + m].decode()), pos + 2 + m
        else:
            raise ProtocolViolation(f"unknown property identifier 0x{prop_id:02x}")
        props.setdefault(prop_id, []).append(value)
    if pos != end:
        raise ProtocolViolation("property block overruns its length")
    return props, end


@dataclass(slots=True)
class Packet:
    """One packet read off the wire: fixed-header byte, body, and the exact bytes."""

    first_byte: int
    body: bytes
    raw: bytes

    @property
    def type(self) -> int:
        """The packet type (1..15)."""
        return self.first_byte >> 4

    @property
    def flags(self) -> int:
        """The low nibble of the fixed header."""
        return self.first_byte & 0x0F

    @property
    def name(self) -> str:
        """The packet type's name, for messages."""
        return PACKET_NAMES.get(self.type, f"type {self.type}")

    def reason_code(self) -> int:
        """Reason/return code of CONNACK, DISCONNECT (0 when absent) or 5.0 acks."""
        if self.type == CONNACK:
            return self.body[1]
        if self.type == DISCONNECT:
            return self.body[0] if self.body else 0
        if self.type in (PUBACK, PUBREC, PUBREL, PUBCOMP):
            return self.body[2] if len(self.body) > 2 else 0
        raise ValueError(f"{self.name} has no single reason code")

    def properties(self, proto_ver: int = 5) -> dict[int, list[PropertyValue]]:
        """The 5.0 properties of CONNACK, DISCONNECT or PUBLISH ({} when absent)."""
        if proto_ver != 5:
            return {}
        if self.type == CONNACK:
            return decode_properties(self.body, 2)[0] if len(self.body) > 2 else {}
        if self.type == DISCONNECT:
            return decode_properties(self.body, 1)[0] if len(self.body) > 1 else {}
        if self.type == PUBLISH:
            return self.publish(proto_ver).properties
        raise ValueError(f"properties of {self.name} are not decoded here")

    def publish(self, proto_ver: int = 4) -> PublishView:
        """Decode this PUBLISH."""
        if self.type != PUBLISH:
            raise ProtocolViolation(f"expected PUBLISH, got {self.name} {self.raw.hex(' ')}")
        qos = (self.flags >> 1) & 0x03
        (n,) = struct.unpack_from("!H", self.body, 0)
        topic = self.body[2 : 2 + n].decode()
        pos = 2 + n
        mid = 0
        if qos:
            (mid,) = struct.unpack_from("!H", self.body, pos)
            pos += 2
        props: dict[int, list[PropertyValue]] = {}
        if proto_ver == 5:
            props, pos = decode_properties(self.body, pos)
        return PublishView(
            topic=topic,
            payload=self.body[pos:],
            qos=qos,
            retain=bool(self.flags & 0x01),
            dup=bool(self.flags & 0x08),
            mid=mid,
            properties=props,
        )

    def describe(self) -> str:
        """Name and bytes, for failure messages."""
        return f"{self.name} {self.raw.hex(' ')}"

    def mid(self) -> int:
        """The packet identifier of an ack, SUBACK or UNSUBACK."""
        return int(struct.unpack_from("!H", self.body, 0)[0])


@dataclass(slots=True)
class PublishView:
    """The fields of a decoded PUBLISH."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    mid: int
    properties: dict[int, list[PropertyValue]] = field(default_factory=dict)


# --------------------------------------------------------------------------- the client


class RawClient:
    """A blocking TCP client that sends hand-made bytes and reads whole packets back."""

    def __init__(self, host: str, port: int, *, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""
        self.closed_by_peer = False

    # context manager: always release the socket
    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close our end (without sending DISCONNECT: for the broker this is abrupt)."""
        with contextlib.suppress(OSError):
            self.sock.close()

    def abort(self) -> None:
        """Reset the connection (RST via SO_LINGER 0): the most abrupt way to go."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def send(self, data: bytes) -> None:
        """Send bytes exactly as given."""
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        """Read more bytes into the buffer; False on EOF or reset."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        except TimeoutError:
            raise
        except OSError:
            chunk = b""
        if not chunk:
            self.closed_by_peer = True
            return False
        self._buffer += chunk
        return True

    def read_packet(self, timeout: float | None = None) -> Packet | None:
        """The next whole packet, or None when the peer closed. TimeoutError on silence."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if len(self._buffer) >= 2:
                try:
                    length, pos = _read_varint(self._buffer, 1)
                except ProtocolViolation as exc:
                    if "truncated" not in str(exc):
                        raise
                else:
                    if len(self._buffer) >= pos + length:
                        raw = self._buffer[: pos + length]
                        self._buffer = self._buffer[pos + length :]
                        return Packet(raw[0], raw[pos:], raw)
            if self.closed_by_peer or not self._fill(deadline):
                if self._buffer:
                    raise ProtocolViolation(f"peer closed mid-packet: {self._buffer.hex(' ')}")
                return None

    def expect_packet(
        self, expected: bytes, what: str = "packet", timeout: float | None = None
    ) -> Packet:
        """Read one packet and require it to be exactly ``expected``."""
        try:
            packet = self.read_packet(timeout)
        except TimeoutError:
            raise ProtocolViolation(f"timed out waiting for {what} {expected.hex(' ')}") from None
        if packet is None:
            raise ProtocolViolation(
                f"connection closed while waiting for {what} {expected.hex(' ')}"
            )
        if packet.raw != expected:
            raise ProtocolViolation(
                f"{what}: expected {expected.hex(' ')}, received {packet.raw.hex(' ')}"
            )
        return packet

    def expect_type(self, packet_type: int, timeout: float | None = None) -> Packet:
        """Read one packet and require its type."""
        try:
            packet = self.read_packet(timeout)
        except TimeoutError:
            raise ProtocolViolation(f"timed out waiting for {PACKET_NAMES[packet_type]}") from None
        if packet is None:
            raise ProtocolViolation(
                f"connection closed while waiting for {PACKET_NAMES[packet_type]}"
            )
        if packet.type != packet_type:
            raise ProtocolViolation(
                f"expected {PACKET_NAMES[packet_type]}, received {packet.describe()}"
            )
        return packet

    def expect_closed(
        self, timeout: float | None = None, *, allow: Iterable[int] = ()
    ) -> list[Packet]:
        """Wait for the peer to close; packets of the ``allow``-ed types may come first.

        Returns those packets. Fails on any other packet, or if the socket stays open.
        """
        allowed = set(allow)
        seen: list[Packet] = []
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            try:
                packet = self.read_packet(max(deadline - time.monotonic(), 0.001))
            except TimeoutError:
                raise ProtocolViolation(
                    f"connection still open after {self.timeout if timeout is None else timeout}s"
                    + (f" (received {[p.raw.hex(' ') for p in seen]})" if seen else "")
                ) from None
            if packet is None:
                return seen
            if packet.type not in allowed:
                raise ProtocolViolation(
                    f"expected the connection to close, received {packet.describe()}"
                )
            seen.append(packet)

    def expect_disconnect(self, reason_code: int, timeout: float | None = None) -> Packet:
        """5.0: require a DISCONNECT with ``reason_code`` and then the close."""
        packets = self.expect_closed(timeout, allow=[DISCONNECT])
        if not packets:
            raise ProtocolViolation(
                f"connection closed without DISCONNECT 0x{reason_code:02x} [MQTT-4.13.1-1]"
            )
        got = packets[0].reason_code()
        if got != reason_code:
            raise ProtocolViolation(f"DISCONNECT reason 0x{got:02x}, expected 0x{reason_code:02x}")
        return packets[0]

    def expect_silence(self, duration: float) -> None:
        """Require that nothing arrives and the socket stays open for ``duration`` seconds."""
        try:
            packet = self.read_packet(duration)
        except TimeoutError:
            return
        if packet is None:
            raise ProtocolViolation("connection closed unexpectedly")
        raise ProtocolViolation(f"unexpected {packet.name} {packet.raw.hex(' ')}")

    def is_open(self) -> bool:
        """True when the peer has not closed the socket (checked without blocking)."""
        if self.closed_by_peer:
            return False
        readable, _, _ = select.select([self.sock], [], [], 0)
        if not readable:
            return True
        try:
            data = self.sock.recv(65536, socket.MSG_PEEK)
        except OSError:
            return False
        return bool(data)

    # -------------------------------------------------------------- conversations

    def connect(
        self,
        client_id: str,
        *,
        proto_ver: int = 4,
        expect_rc: int = 0,
        session_present: bool | None = False,
        **connect_args: object,
    ) -> Packet:
        """Send CONNECT and require CONNACK with ``expect_rc`` (and session present flag)."""
        self.send(gen_connect(client_id, proto_ver=proto_ver, **connect_args))  # type: ignore[arg-type]
        connack = self.expect_type(CONNACK)
        if connack.reason_code() != expect_rc:
            raise ProtocolViolation(
                f"CONNACK code 0x{connack.reason_code():02x}, expected 0x{expect_rc:02x}"
                f" ({connack.raw.hex(' ')})"
            )
        if session_present is not None and bool(connack.body[0] & 0x01) != session_present:
            raise ProtocolViolation(f"CONNACK session present is {connack.body[0] & 1}")
        return connack

    def subscribe(self, mid: int, topic: str, qos: int = 0, *, proto_ver: int = 4) -> Packet:
        """Subscribe to one filter and require the SUBACK granting ``qos``."""
        self.send(gen_subscribe(mid, topic, qos, proto_ver=proto_ver))
        if proto_ver == 5:
            suback = self.expect_type(SUBACK)
            props_end = decode_properties(suback.body, 2)[1]
            if suback.mid() != mid or suback.body[props_end:] != bytes([qos]):
                raise ProtocolViolation(f"unexpected SUBACK {suback.raw.hex(' ')}")
            return suback
        return self.expect_packet(gen_suback(mid, qos), "SUBACK")

    def receive_publishes(
        self, count: int, *, proto_ver: int = 4, timeout: float | None = None
    ) -> list[PublishView]:
        """Read ``count`` PUBLISH packets in wire order, acknowledging each as a client must.

        QoS 1 gets PUBACK, QoS 2 PUBREC and, when the PUBREL comes, PUBCOMP; returns once
        every QoS 2 flow is complete too. Any other packet is a failure.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        received: list[PublishView] = []
        awaiting_pubrel: set[int] = set()
        while len(received) < count or awaiting_pubrel:
            try:
                packet = self.read_packet(max(deadline - time.monotonic(), 0.001))
            except TimeoutError:
                raise ProtocolViolation(
                    f"received {len(received)} of {count} PUBLISH, {len(awaiting_pubrel)} "
                    f"PUBREL missing; the last ones: {received[-3:]}"
                ) from None
            if packet is None:
                raise ProtocolViolation(f"closed after {len(received)} of {count} PUBLISH")
            if packet.type == PUBLISH:
                view = packet.publish(proto_ver)
                received.append(view)
                if view.qos == 1:
                    self.send(gen_puback(view.mid, proto_ver=proto_ver))
                elif view.qos == 2:
                    self.send(gen_pubrec(view.mid, proto_ver=proto_ver))
                    awaiting_pubrel.add(view.mid)
            elif packet.type == PUBREL:
                if packet.flags != 0x02:
                    raise ProtocolViolation(f"PUBREL flags must be 0010: {packet.raw.hex(' ')}")
                awaiting_pubrel.discard(packet.mid())
                self.send(gen_pubcomp(packet.mid(), proto_ver=proto_ver))
            else:
                raise ProtocolViolation(f"unexpected {packet.name} {packet.raw.hex(' ')}")
        return received

    def disconnect(self, *, proto_ver: int = 4) -> None:
        """Send DISCONNECT and wait for the broker to close the socket."""
        self.send(gen_disconnect(proto_ver=proto_ver))
        self.expect_closed()


def assert_broker_works(host: str, port: int, *, proto_ver: int = 4, tag: str = "health") -> None:
    """A well-behaved client subscribes, publishes QoS 1 to itself and gets it back.

    Used after every protocol violation: one bad client must not hurt the broker.
    """
    import uuid

    client_id = f"{tag}-{uuid.uuid4().hex[:10]}"
    topic = f"mqttd-test/{client_id}"
    with RawClient(host, port) as client:
        client.connect(client_id, proto_ver=proto_ver)
        client.subscribe(1, topic, 1, proto_ver=proto_ver)
        client.send(gen_publish(topic, qos=1, mid=2, payload=b"ok", proto_ver=proto_ver))
        got: dict[int, Packet] = {}
        # PUBACK for our publish and the delivered PUBLISH may come in either order.
        while len(got) < 2:
            packet = client.read_packet()
            if packet is None:
                raise ProtocolViolation("broker closed a well-behaved client")
            got[packet.type] = packet
        if got.get(PUBACK) is None or got[PUBACK].mid() != 2:
            raise ProtocolViolation(
                f"no PUBACK for mid 2: {[p.raw.hex(' ') for p in got.values()]}"
            )
        delivered = got.get(PUBLISH)
        if delivered is None:
            raise ProtocolViolation("the health-check message was not delivered")
        view = delivered.publish(proto_ver)
        if (view.topic, view.payload, view.qos) != (topic, b"ok", 1):
            raise ProtocolViolation(f"wrong delivery: {view}")
        client.send(gen_puback(view.mid, proto_ver=proto_ver))
        client.disconnect(proto_ver=proto_ver)
