"""MQTT control packets as slotted dataclasses, one class per packet type.

The same classes serve MQTT 3.1 (level 3), 3.1.1 (level 4) and 5.0 (level 5); fields
that exist only in 5.0 (reason codes on acknowledgements, properties) keep their
defaults for 3.x and are neither encoded nor decoded there.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .properties import Properties


class PacketType(enum.IntEnum):
    """Control packet types (the high nibble of the fixed header's first byte)."""

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


class ProtocolLevel(enum.IntEnum):
    """The protocol level byte of CONNECT."""

    MQTT_3_1 = 3
    MQTT_3_1_1 = 4
    MQTT_5 = 5


@dataclass(slots=True)
class Will:
    """The will message carried by CONNECT."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties | None = None


@dataclass(slots=True)
class Connect:
    """CONNECT. `protocol_name` is "MQIsdp" for 3.1 and "MQTT" otherwise."""

    client_id: str
    protocol_level: int = ProtocolLevel.MQTT_3_1_1
    clean_start: bool = True
    keep_alive: int = 0
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    properties: Properties | None = None
    protocol_name: str = "MQTT"
    #: The bridge bit: a protocol level byte of 0x83/0x84 (0x80 | level), sent by
    #: Mosquitto bridges with try_private. Not in the spec; `protocol_level` stays 3 or 4.
    bridge: bool = False


@dataclass(slots=True)
class Connack:
    """CONNACK. `reason_code` is the 3.x return code when the level is 3 or 4."""

    session_present: bool = False
    reason_code: int = 0
    properties: Properties | None = None


@dataclass(slots=True)
class Publish:
    """PUBLISH. `packet_id` is None exactly when qos is 0.

    With MQTT 5 topic aliases `topic` may be "" and `properties.topic_alias` set.
    """

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None
    properties: Properties | None = None
    #: The packet's bytes as received (set by the reader for 3.x), so a broker can pass
    #: them on without encoding them again. Not part of the packet's value.
    raw: bytes | None = field(default=None, compare=False, repr=False)


@dataclass(slots=True)
class PubAck:
    """PUBACK: QoS 1 acknowledgement."""

    packet_id: int
    reason_code: int = 0
    properties: Properties | None = None


@dataclass(slots=True)
class PubRec:
    """PUBREC: QoS 2, first step."""

    packet_id: int
    reason_code: int = 0
    properties: Properties | None = None


@dataclass(slots=True)
class PubRel:
    """PUBREL: QoS 2, second step."""

    packet_id: int
    reason_code: int = 0
    properties: Properties | None = None


@dataclass(slots=True)
class PubComp:
    """PUBCOMP: QoS 2, last step."""

    packet_id: int
    reason_code: int = 0
    properties: Properties | None = None


@dataclass(slots=True)
class Subscription:
    """One topic filter of a SUBSCRIBE with its options (the options byte in 5.0)."""

    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass(slots=True)
class Subscribe:
    """SUBSCRIBE."""

    packet_id: int
    subscriptions: list[Subscription] = field(default_factory=list)
    properties: Properties | None = None


@dataclass(slots=True)
class SubAck:
    """SUBACK: one granted QoS or failure/reason code per filter."""

    packet_id: int
    reason_codes: list[int] = field(default_factory=list)
    properties: Properties | None = None


@dataclass(slots=True)
class Unsubscribe:
    """UNSUBSCRIBE."""

    packet_id: int
    topic_filters: list[str] = field(default_factory=list)
    properties: Properties | None = None


@dataclass(slots=True)
class UnsubAck:
    """UNSUBACK. `reason_codes` exist only in 5.0 (empty for 3.x)."""

    packet_id: int
    reason_codes: list[int] = field(default_factory=list)
    properties: Properties | None = None


@dataclass(slots=True)
class PingReq:
    """PINGREQ."""


@dataclass(slots=True)
class PingResp:
    """PINGRESP."""


@dataclass(slots=True)
class Disconnect:
    """DISCONNECT. Reason code and properties exist only in 5.0."""

    reason_code: int = 0
    properties: Properties | None = None


@dataclass(slots=True)
class Auth:
    """AUTH (5.0 only): enhanced authentication exchange."""

    reason_code: int = 0
    properties: Properties | None = None


Packet = (
    Connect
    | Connack
    | Publish
    | PubAck
    | PubRec
    | PubRel
    | PubComp
    | Subscribe
    | SubAck
    | Unsubscribe
    | UnsubAck
    | PingReq
    | PingResp
    | Disconnect
    | Auth
)

PACKET_TYPE_OF: dict[type[Packet], PacketType] = {
    Connect: PacketType.CONNECT,
    Connack: PacketType.CONNACK,
    Publish: PacketType.PUBLISH,
    PubAck: PacketType.PUBACK,
    PubRec: PacketType.PUBREC,
    PubRel: PacketType.PUBREL,
    PubComp: PacketType.PUBCOMP,
    Subscribe: PacketType.SUBSCRIBE,
    SubAck: PacketType.SUBACK,
    Unsubscribe: PacketType.UNSUBSCRIBE,
    UnsubAck: PacketType.UNSUBACK,
    PingReq: PacketType.PINGREQ,
    PingResp: PacketType.PINGRESP,
    Disconnect: PacketType.DISCONNECT,
    Auth: PacketType.AUTH,
}
