"""The bytes one node sends another for a message: what MQTT 5 delivery needs (sans-IO).

Layout (version 1; integers big-endian)::

    version      1 byte   (1)
    flags        1 byte   bits 0-1 QoS, 2 retain, 3 has origin, 4 has expiry, 5 cleared
    boot         8 bytes  the sending process's random incarnation id
    seq          8 bytes  its message counter (with `boot`: one id per message sent)
    expiry       8 bytes  IEEE double, wall-clock deadline (Unix seconds); 0 = none
    node         UTF-8 string (two-byte length first): the sending node's name
    origin       UTF-8 string, when flagged: the publisher's client id (for No Local)
    topic        UTF-8 string
    properties   an MQTT 5 PUBLISH property block (Property Length first)
    payload      the rest

The properties are the publisher's own (Payload Format, Content Type, Response Topic,
Correlation Data, User Properties, Message Expiry Interval), so Retain As Published,
No Local and expiry work on the receiving node as on the publisher's. The expiry is a
wall-clock deadline rather than seconds left, because a retained message waits in the
KV bucket for an unknown time: nodes' clocks must agree (NTP) to within the precision
expiry needs. A "cleared" envelope (empty payload, retain flag) records in the retained
bucket that a topic has no retained message any more; it keeps the clearing node's
name so that each node can tell its own changes from others'.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..protocol.datatypes import Cursor, encode_utf8_string
from ..protocol.errors import MQTTError
from ..protocol.properties import Properties, PropertyContext
from ..protocol.property_codec import decode_properties, encode_properties

__all__ = [
    "Envelope",
    "EnvelopeError",
    "decode_envelope",
    "encode_envelope",
    "envelope_qos",
]

VERSION = 1
_HEAD = struct.Struct(">BBQQd")
_RETAIN = 0x04
_ORIGIN = 0x08
_EXPIRY = 0x10
_CLEARED = 0x20
_PUBLISH = int(PropertyContext.PUBLISH)


class EnvelopeError(ValueError):
    """Bytes that are not an envelope this version understands."""


@dataclass(slots=True)
class Envelope:
    """One message between nodes, with the id and sender that came with it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties | None
    origin: str | None
    node: str
    boot: int
    seq: int
    expiry_wall: float | None = None
    cleared: bool = False


def encode_envelope(envelope: Envelope) -> bytes:
    """The bytes of `envelope`; ValueError when its properties cannot be encoded."""
    flags = envelope.qos & 0x03
    if envelope.retain:
        flags |= _RETAIN
    if envelope.origin is not None:
        flags |= _ORIGIN
    if envelope.expiry_wall is not None:
        flags |= _EXPIRY
    if envelope.cleared:
        flags |= _CLEARED
    parts = [
        _HEAD.pack(VERSION, flags, envelope.boot, envelope.seq, envelope.expiry_wall or 0.0),
        encode_utf8_string(envelope.node, "node"),
    ]
    if envelope.origin is not None:
        parts.append(encode_utf8_string(envelope.origin, "origin"))
    parts.append(encode_utf8_string(envelope.topic, "topic"))
    parts.append(encode_properties(envelope.properties, _PUBLISH))
    parts.append(envelope.payload)
    return b"".join(parts)


def envelope_qos(data: bytes) -> int:
    """The QoS of the envelope in `data`, read without decoding it (0 if too short)."""
    return data[1] & 0x03 if len(data) > 1 else 0


def decode_envelope(data: bytes) -> Envelope:
    """The envelope in `data`; `EnvelopeError` when it is not a well-formed one."""
    if len(data) < _HEAD.size:
        raise EnvelopeError("envelope shorter than its header")
    version, flags, boot, seq, expiry = _HEAD.unpack_from(data)
    if version != VERSION:
        raise EnvelopeError(f"envelope version {version} (this node reads {VERSION})")
    cursor = Cursor(data, _HEAD.size, len(data))
    try:
        node = cursor.utf8_string()
        origin = cursor.utf8_string() if flags & _ORIGIN else None
        topic = cursor.utf8_string()
        properties = decode_properties(cursor, _PUBLISH)
    except MQTTError as exc:
        raise EnvelopeError(f"bad envelope: {exc}") from exc
    return Envelope(
        topic,
        cursor.rest(),
        flags & 0x03,
        bool(flags & _RETAIN),
        properties,
        origin,
        node,
        boot,
        seq,
        expiry if flags & _EXPIRY else None,
        bool(flags & _CLEARED),
    )
