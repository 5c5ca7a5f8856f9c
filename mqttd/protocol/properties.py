"""MQTT 5.0 properties (spec 2.2.2): identifiers and the typed `Properties` record.

`Properties` has one attribute per property, named after the property, `None` when
absent. User Property and Subscription Identifier may repeat, so they are tuples.
A packet with no properties carries `properties=None` rather than an empty record,
which keeps the MQTT 3.x hot path free of allocations.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import Final


class PropertyId(enum.IntEnum):
    """Property identifiers (spec 2.2.2.2)."""

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
    AUTHENTICATION_DATA = 0x16
    REQUEST_PROBLEM_INFORMATION = 0x17
    WILL_DELAY_INTERVAL = 0x18
    REQUEST_RESPONSE_INFORMATION = 0x19
    RESPONSE_INFORMATION = 0x1A
    SERVER_REFERENCE = 0x1C
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


@dataclass(slots=True)
class Properties:
    """The MQTT 5 properties of one packet; each attribute is one property."""

    payload_format_indicator: int | None = None
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    subscription_identifier: tuple[int, ...] = ()
    session_expiry_interval: int | None = None
    assigned_client_identifier: str | None = None
    server_keep_alive: int | None = None
    authentication_method: str | None = None
    authentication_data: bytes | None = None
    request_problem_information: int | None = None
    will_delay_interval: int | None = None
    request_response_information: int | None = None
    response_information: str | None = None
    server_reference: str | None = None
    reason_string: str | None = None
    receive_maximum: int | None = None
    topic_alias_maximum: int | None = None
    topic_alias: int | None = None
    maximum_qos: int | None = None
    retain_available: int | None = None
    user_property: tuple[tuple[str, str], ...] = ()
    maximum_packet_size: int | None = None
    wildcard_subscription_available: int | None = None
    subscription_identifier_available: int | None = None
    shared_subscription_available: int | None = None

    def is_empty(self) -> bool:
        """True when no property is set (it then encodes as a zero length)."""
        return all(getattr(self, f.name) in (None, ()) for f in fields(self))

    def __repr__(self) -> str:
        # Only the properties that are set: 27 mostly-None fields drown the one that is.
        shown = (
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) not in (None, ())
        )
        return f"Properties({', '.join(shown)})"


class PropertyType(enum.IntEnum):
    """The data type of a property's value (spec 2.2.2.2, data types from 1.5).

    The three length-prefixed types come last: the decoder tests `>= UTF8_STRING`.
    """

    BYTE = 1
    TWO_BYTE_INTEGER = 2
    FOUR_BYTE_INTEGER = 3
    VARIABLE_BYTE_INTEGER = 4
    UTF8_STRING = 5
    BINARY_DATA = 6
    UTF8_STRING_PAIR = 7


class PropertyContext(enum.IntEnum):
    """Where a property block sits: a packet (same value as its PacketType) or the Will.

    The Will Properties of CONNECT follow their own table (3.1.3.2), so they get a
    context of their own, WILL, numbered 0 because no packet type uses 0.
    """

    WILL = 0
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
    DISCONNECT = 14
    AUTH = 15


@dataclass(frozen=True, slots=True)
class PropertySpec:
    """What the spec says about one property: its type, where it may appear, and
    where it may repeat (everywhere else a second copy is a Protocol Error)."""

    id: PropertyId
    name: str
    type: PropertyType
    contexts: frozenset[PropertyContext]
    repeatable_in: frozenset[PropertyContext] = frozenset()


def _spec(
    pid: PropertyId,
    ptype: PropertyType,
    *contexts: PropertyContext,
    repeatable_in: tuple[PropertyContext, ...] = (),
) -> PropertySpec:
    return PropertySpec(pid, pid.name.lower(), ptype, frozenset(contexts), frozenset(repeatable_in))


_C = PropertyContext
_T = PropertyType
_P = PropertyId
_ACKS = (_C.PUBACK, _C.PUBREC, _C.PUBREL, _C.PUBCOMP)
_ALL_WITH_PROPERTIES = tuple(_C)

# The table of spec 2.2.2.2 ("Properties"), row by row.
PROPERTY_SPECS: Final[dict[int, PropertySpec]] = {
    spec.id: spec
    for spec in (
        _spec(_P.PAYLOAD_FORMAT_INDICATOR, _T.BYTE, _C.PUBLISH, _C.WILL),
        _spec(_P.MESSAGE_EXPIRY_INTERVAL, _T.FOUR_BYTE_INTEGER, _C.PUBLISH, _C.WILL),
        _spec(_P.CONTENT_TYPE, _T.UTF8_STRING, _C.PUBLISH, _C.WILL),
        _spec(_P.RESPONSE_TOPIC, _T.UTF8_STRING, _C.PUBLISH, _C.WILL),
        _spec(_P.CORRELATION_DATA, _T.BINARY_DATA, _C.PUBLISH, _C.WILL),
        # A PUBLISH to a subscriber carries one identifier per matching subscription
        # (3.3.4); SUBSCRIBE carries at most one (3.8.2.1.2).
        _spec(
            _P.SUBSCRIPTION_IDENTIFIER,
            _T.VARIABLE_BYTE_INTEGER,
            _C.PUBLISH,
            _C.SUBSCRIBE,
            repeatable_in=(_C.PUBLISH,),
        ),
        _spec(
            _P.SESSION_EXPIRY_INTERVAL, _T.FOUR_BYTE_INTEGER, _C.CONNECT, _C.CONNACK, _C.DISCONNECT
        ),
        _spec(_P.ASSIGNED_CLIENT_IDENTIFIER, _T.UTF8_STRING, _C.CONNACK),
        _spec(_P.SERVER_KEEP_ALIVE, _T.TWO_BYTE_INTEGER, _C.CONNACK),
        _spec(_P.AUTHENTICATION_METHOD, _T.UTF8_STRING, _C.CONNECT, _C.CONNACK, _C.AUTH),
        _spec(_P.AUTHENTICATION_DATA, _T.BINARY_DATA, _C.CONNECT, _C.CONNACK, _C.AUTH),
        _spec(_P.REQUEST_PROBLEM_INFORMATION, _T.BYTE, _C.CONNECT),
        _spec(_P.WILL_DELAY_INTERVAL, _T.FOUR_BYTE_INTEGER, _C.WILL),
        _spec(_P.REQUEST_RESPONSE_INFORMATION, _T.BYTE, _C.CONNECT),
        _spec(_P.RESPONSE_INFORMATION, _T.UTF8_STRING, _C.CONNACK),
        _spec(_P.SERVER_REFERENCE, _T.UTF8_STRING, _C.CONNACK, _C.DISCONNECT),
        _spec(
            _P.REASON_STRING,
            _T.UTF8_STRING,
            _C.CONNACK,
            *_ACKS,
            _C.SUBACK,
            _C.UNSUBACK,
            _C.DISCONNECT,
            _C.AUTH,
        ),
        _spec(_P.RECEIVE_MAXIMUM, _T.TWO_BYTE_INTEGER, _C.CONNECT, _C.CONNACK),
        _spec(_P.TOPIC_ALIAS_MAXIMUM, _T.TWO_BYTE_INTEGER, _C.CONNECT, _C.CONNACK),
        _spec(_P.TOPIC_ALIAS, _T.TWO_BYTE_INTEGER, _C.PUBLISH),
        _spec(_P.MAXIMUM_QOS, _T.BYTE, _C.CONNACK),
        _spec(_P.RETAIN_AVAILABLE, _T.BYTE, _C.CONNACK),
        _spec(
            _P.USER_PROPERTY,
            _T.UTF8_STRING_PAIR,
            *_ALL_WITH_PROPERTIES,
            repeatable_in=_ALL_WITH_PROPERTIES,
        ),
        _spec(_P.MAXIMUM_PACKET_SIZE, _T.FOUR_BYTE_INTEGER, _C.CONNECT, _C.CONNACK),
        _spec(_P.WILDCARD_SUBSCRIPTION_AVAILABLE, _T.BYTE, _C.CONNACK),
        _spec(_P.SUBSCRIPTION_IDENTIFIER_AVAILABLE, _T.BYTE, _C.CONNACK),
        _spec(_P.SHARED_SUBSCRIPTION_AVAILABLE, _T.BYTE, _C.CONNACK),
    )
}

# Properties whose only legal values are 0 and 1: any other value is a Protocol Error
# (3.1.2.11.7, 3.1.2.11.6, 3.2.2.3.4, 3.2.2.3.5, 3.2.2.3.11-13). Payload Format Indicator
# defines only 0 and 1 too (3.3.2.3.2); like Mosquitto we refuse anything else.
ZERO_OR_ONE_PROPERTIES: Final[frozenset[int]] = frozenset(
    {
        PropertyId.PAYLOAD_FORMAT_INDICATOR,
        PropertyId.REQUEST_PROBLEM_INFORMATION,
        PropertyId.REQUEST_RESPONSE_INFORMATION,
        PropertyId.MAXIMUM_QOS,
        PropertyId.RETAIN_AVAILABLE,
        PropertyId.WILDCARD_SUBSCRIPTION_AVAILABLE,
        PropertyId.SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        PropertyId.SHARED_SUBSCRIPTION_AVAILABLE,
    }
)

# Properties for which 0 is a Protocol Error: Subscription Identifier (3.3.2.3.8),
# Receive Maximum (3.1.2.11.3, 3.2.2.3.3), Maximum Packet Size (3.1.2.11.4, 3.2.2.3.6).
# Topic Alias 0 is also an error (3.3.2.3.4) but the reader lets it through so the broker
# can answer with the precise reason, 0x94 Topic Alias invalid.
NONZERO_PROPERTIES: Final[frozenset[int]] = frozenset(
    {
        PropertyId.SUBSCRIPTION_IDENTIFIER,
        PropertyId.RECEIVE_MAXIMUM,
        PropertyId.MAXIMUM_PACKET_SIZE,
    }
)
